#!/usr/bin/env bash
# Soak: run wa-sidecar over a bridge that crashes at once, respawned with
# no delay, for DURATION (seconds, or with an s/m/h suffix), and check that
# its open fds, threads, goroutines (when its status server is on), RSS and
# zombie children stay flat. Prints the series; exits 1 on growth.
#
#   bench/soak.sh 30s        # what CI runs
#   bench/soak.sh 2h         # a real soak
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: bench/soak.sh DURATION   (e.g. 30, 30s, 10m, 2h)" >&2; exit 2; }
[ $# -eq 1 ] || usage
case "$1" in
  *h) secs=$(( ${1%h} * 3600 )) ;;
  *m) secs=$(( ${1%m} * 60 )) ;;
  *s) secs=${1%s} ;;
  *) secs=$1 ;;
esac
[[ "$secs" =~ ^[0-9]+$ ]] && [ "$secs" -ge 10 ] || { echo "soak: DURATION must be at least 10 s (got '$1')" >&2; usage; }

work=$(mktemp -d)
sidecar_pid=""
cleanup() {
  if [ -n "$sidecar_pid" ] && kill -0 "$sidecar_pid" 2>/dev/null; then
    kill -TERM "$sidecar_pid" 2>/dev/null || true
    wait "$sidecar_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/wa-sidecar" ./cmd/wa-sidecar
go build -o "$work/fakebridge" ./testdata/fakebridge

# The status server on a free loopback port, so the goroutine count can be
# read from /metrics and no other sidecar's default port is in the way.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
listen=(--listen "127.0.0.1:$port" --state-dir "$work/state")
metrics="http://127.0.0.1:$port/metrics"

# Warnings only: a crash loop at full speed logs a few lines per restart.
"$work/wa-sidecar" run --backoff-initial 0 --backoff-max 0 --log-format json --log-level error "${listen[@]}" \
  -- "$work/fakebridge" -count-file "$work/runs" -exit 1 >"$work/sidecar.log" 2>&1 &
sidecar_pid=$!

interval=$(( secs / 30 ))
[ "$interval" -ge 1 ] || interval=1

field() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$sidecar_pid/status"; }
# The pids of the sidecar's zombie children, comma-separated ("-" for none).
zombies() { { ps -o stat=,pid= --ppid "$sidecar_pid" || true; } | awk '$1 ~ /^Z/ {z = z (z ? "," : "") $2} END {print z ? z : "-"}'; }
goroutines() {
  if [ -z "$metrics" ]; then echo "-"; return; fi
  curl -fsS --max-time 2 "$metrics" 2>/dev/null | awk '$1 == "go_goroutines" {print $2}' || echo "?"
}

echo "soak: wa-sidecar pid $sidecar_pid over a bridge that exits 1 at once, no backoff, for ${secs}s"
printf '%6s %9s %5s %8s %10s %8s %8s\n' t_s restarts fds threads goroutines rss_kib zombies
ts=() fds=() thr=() gor=() rss=() zom=()
runs=0
start=$(date +%s)
while :; do
  now=$(( $(date +%s) - start ))
  [ "$now" -le "$secs" ] || break
  if ! kill -0 "$sidecar_pid" 2>/dev/null; then
    echo "soak: FAIL: the sidecar exited; its log:" >&2
    tail -20 "$work/sidecar.log" >&2
    exit 1
  fi
  # The bridge rewrites the count as it starts; keep the last good one.
  r0=$(cat "$work/runs" 2>/dev/null || true)
  [ -n "$r0" ] && runs=$r0
  f=$(ls "/proc/$sidecar_pid/fd" | wc -l)
  t=$(field Threads)
  r=$(field VmRSS)
  z=$(zombies)
  g=$(goroutines)
  printf '%6d %9s %5d %8d %10s %8d %8s\n' "$now" "$runs" "$f" "$t" "$g" "$r" "$z"
  ts+=("$now") fds+=("$f") thr+=("$t") gor+=("$g") rss+=("$r") zom+=("$z")
  sleep "$interval"
done

n=${#fds[@]}
fail=0
if [ "$runs" -lt 100 ]; then
  echo "soak: FAIL: only $runs bridge runs; the crash loop did not run" >&2
  fail=1
fi
# Compare the last quarter with the second, after a warm-up quarter in
# which the heap and thread count find their level: growth that goes on
# through a crash loop is a leak.
maxof() { local m=0 v; for v in "$@"; do [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -gt "$m" ] && m=$v; done; echo "$m"; }
basemax() { local -n a=$1; maxof "${a[@]:$(( n / 4 )):$(( n / 4 + 1 ))}"; }
tailmax() { local -n a=$1; maxof "${a[@]:$(( n * 3 / 4 ))}"; }
# fds come and go with each spawn: the running bridge's pipes and pidfd,
# and the next run's pipes, made while it runs, so a sample reads 16 to 20
# depending on where in the cycle it falls, and the lowest of a quarter's
# eight samples is a matter of luck. The highest is not: nearly every
# sample falls while a bridge runs with the next pipes made. A leak in a
# crash loop of thousands of runs would add far more than the allowance.
check() { # name base end allowed
  if [ "$3" -gt $(( $2 + $4 )) ]; then
    echo "soak: FAIL: $1 grew from $2 to $3 (allowed +$4)" >&2
    fail=1
  else
    echo "soak: $1 flat: $2 after warm-up, $3 at the end"
  fi
}
check "open fds (highest)" "$(basemax fds)" "$(tailmax fds)" 4
check "threads" "$(basemax thr)" "$(tailmax thr)" 4
if [ -n "$metrics" ]; then
  check "goroutines" "$(basemax gor)" "$(tailmax gor)" 5
fi
rb=$(basemax rss)
check "RSS (KiB)" "$rb" "$(tailmax rss)" $(( rb / 4 + 2048 ))
# A zombie can be caught between an exit and its reaping, which takes well
# under a millisecond; at hundreds of exits a second, samples a second apart
# each catch one now and then, a different one each time. The same pid a
# zombie in two samples in a row was not reaped for a second.
stayed=""
for ((i = 1; i < ${#zom[@]}; i++)); do
  for p in ${zom[i]//,/ }; do
    [ "$p" != "-" ] && [[ ",${zom[i-1]}," == *",$p,"* ]] && stayed=$p
  done
done
if [ -n "$stayed" ]; then
  echo "soak: FAIL: child $stayed stayed a zombie across two samples" >&2
  fail=1
else
  echo "soak: zombies: none that stayed"
fi
echo "soak: $runs bridge runs in ${secs}s"
if [ "$fail" -ne 0 ]; then
  echo "soak: FAIL" >&2
  exit 1
fi
echo "soak: PASS"
