# Mirrors the README's commands; plain `go` works without just.

# Run the sidecar over the built-in simulated bridge.
run *ARGS:
    go run ./cmd/wa-sidecar run --demo {{ARGS}}

# Run every test with the race detector (what CI runs).
test:
    go test -race ./...

# Build the binary into ./bin.
build:
    CGO_ENABLED=0 go build -tags urfave_cli_no_docs -trimpath -ldflags "-s -w" -o bin/wa-sidecar ./cmd/wa-sidecar

# What CI runs.
ci:
    bash .ci/run

# Soak: a crash-looping bridge for DURATION (30s, 10m, 2h); fds, threads, RSS, zombies must stay flat.
soak DURATION="10m":
    bash bench/soak.sh {{DURATION}}

# The manual page, generated from the commands and flags, into ./bin (man -l bin/wa-sidecar.1).
man:
    mkdir -p bin && go run ./cmd/wa-sidecar man > bin/wa-sidecar.1
