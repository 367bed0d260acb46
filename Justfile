# Mirrors the README's commands; plain `go` works without just.

# Run the sidecar over the built-in simulated bridge.
run *ARGS:
    go run ./cmd/wa-sidecar run --demo {{ARGS}}

# Run every test with the race detector (what CI runs).
test:
    go test -race ./...

# Build the binary into ./bin.
build:
    go build -o bin/wa-sidecar ./cmd/wa-sidecar

# What CI runs.
ci:
    bash .ci/run

# Run the sidecar over a crash-looping bridge and check that fds, threads,
# RSS and zombies stay flat (DURATION like 30s, 10m, 2h).
soak DURATION="10m":
    bash bench/soak.sh {{DURATION}}
