#!/usr/bin/env bash
# Side-by-side benchmark of wa-sidecar and its peers on one child.
# Installs what it needs (supervisor, s6, runit and tini from Debian, pm2
# from npm) if missing, builds the binaries (the C child with the system C
# compiler), runs bench/wabench and keeps the
# table in bench/results/. Arguments go to wabench, for example:
#
#   bench/run.sh                               # everything, full size
#   bench/run.sh -n 5 -idle 5s -output-runs 1  # a quick look
#   bench/run.sh -tools floor,pipe-cat,wa-sidecar -only output
#
# Run it on a quiet machine: other work on the CPUs shows in every figure.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v supervisord >/dev/null || missing+=(supervisor)
command -v s6-svscan >/dev/null || missing+=(s6)
command -v runsv >/dev/null || missing+=(runit)
command -v tini >/dev/null || missing+=(tini)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! [ -f "$(npm root -g)/pm2/package.json" ]; then
  echo "bench: installing pm2" >&2
  npm install -g --silent pm2 >/dev/null
fi

mkdir -p bin bench/results
# wa-sidecar is built as the Dockerfile builds the released binary: static,
# without cgo (whose libc mapping alone adds 1.3 MiB to its resident size),
# and without the CLI library's unused docs generators.
CGO_ENABLED=0 go build -tags urfave_cli_no_docs -trimpath -ldflags "-s -w" -o bin/wa-sidecar ./cmd/wa-sidecar
CGO_ENABLED=0 go build -tags urfave_cli_no_docs -trimpath -ldflags "-s -w" -o bin/stackfloor ./bench/stackfloor
go build -o bin/fakebridge ./testdata/fakebridge
go build -o bin/wabench ./bench/wabench
# The C child has no runtime of its own, so what the table shows is the
# supervisor's time, not a bridge's start-up. Static when the C library
# allows it (no dynamic loader at each exec).
child=()
if command -v cc >/dev/null; then
  if cc -O2 -static -pthread -o bin/wabench-child bench/cchild/child.c 2>/dev/null; then
    :
  elif cc -O2 -pthread -o bin/wabench-child bench/cchild/child.c; then
    echo "bench: no static C library; the C child is linked dynamically, which adds the loader to each of its starts" >&2
  fi
else
  echo "bench: no C compiler (cc): skipping the C child; the Go fake bridge is the child everywhere and the floor is Go's" >&2
  child=(-child "")
fi

out="bench/results/$(date -u +%Y%m%dT%H%M%SZ).md"
bin/wabench -sidecar bin/wa-sidecar -stackfloor bin/stackfloor -fakebridge bin/fakebridge -pm2-listener bench/pm2-listen.js "${child[@]}" "$@" | tee "$out"
echo "bench: table saved in $out" >&2
