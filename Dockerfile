# syntax=docker/dockerfile:1
#
# wa-sidecar next to Node.js, which runs the Hermes WhatsApp bridge.
#
#   docker build -t wa-sidecar .
#   docker run -d --name wa-sidecar -v hermes-home:/hermes wa-sidecar
#
# See docs/deployment.md. The sidecar runs as PID 1: it reaps orphans and
# forwards signals, so no --init is needed.

ARG GO_VERSION=1.26
ARG NODE_VERSION=20

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Without --build-arg VERSION the binary says it is an unstamped build
# (there is no .git in the build context to name a commit).
ARG VERSION=
# Static: the runtime image needs no particular libc. urfave_cli_no_docs leaves
# out the CLI library's man-page and markdown generators, which the sidecar
# never uses: 0.3 MB of binary and about 0.8 MiB of resident memory.
RUN CGO_ENABLED=0 go build -tags urfave_cli_no_docs -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
        -o /out/wa-sidecar ./cmd/wa-sidecar \
    && /out/wa-sidecar --version

FROM node:${NODE_VERSION}-bookworm-slim
COPY --from=build /out/wa-sidecar /usr/local/bin/wa-sidecar

# The Hermes home holds the bridge script (scripts/whatsapp-bridge) and the
# WhatsApp session, so it lives on a volume that outlasts the container.
ENV HERMES_HOME=/hermes
# Docker's stop waits 10 s before SIGKILL; a 5 s stop timeout for the
# bridge leaves the sidecar time to reap it and exit 0 within that.
ENV WA_SIDECAR_STOP_TIMEOUT=5s
RUN mkdir -p /hermes && chown node:node /hermes
VOLUME ["/hermes"]

# The node image's unprivileged user (uid 1000).
USER node
WORKDIR /hermes

STOPSIGNAL SIGTERM
# Liveness: /healthz answers while the sidecar runs, whatever the bridge
# does. Whatever acts on an unhealthy container (Swarm, an autoheal) would
# restart the sidecar, which cannot help a bridge that cannot connect or a
# phone that needs pairing, and would kill a pairing under way. Where health
# decides start order, readiness is the check to use instead:
# deploy/compose.yaml overrides this with 'wa-sidecar healthcheck --ready'
# so the gateway starts only once the bridge is adoptable.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["wa-sidecar", "healthcheck"]

ENTRYPOINT ["wa-sidecar"]
CMD ["run"]
