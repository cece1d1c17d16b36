# tenantguard: multi-stage build, non-root runtime.
#   docker build -t tenantguard .
#   docker run --rm tenantguard --version
# pg_query_go needs cgo, so the build stage has a C toolchain and the runtime
# stage has the C library it links against (Debian bookworm on both sides).

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# .git is not copied (.dockerignore), so --version reports "(devel)".
RUN CGO_ENABLED=1 go build -trimpath -buildvcs=false \
      -ldflags "-s -w" -o /out/tenantguard ./cmd/tenantguard

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tenantguard \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/tenantguard --create-home tenantguard
COPY --from=build /out/tenantguard /usr/local/bin/tenantguard
COPY configs/tenantguard.example.yaml /etc/tenantguard/tenantguard.example.yaml
USER 10001:10001
WORKDIR /var/lib/tenantguard
# The decisions signing key is found at $XDG_CONFIG_HOME/tenantguard/decisions.key
# unless decisions.signing_key_file says otherwise. Every replica must sign with
# the same key: mount it (docs/deploy.md).
ENV XDG_CONFIG_HOME=/var/lib/tenantguard
EXPOSE 8080 9464
ENTRYPOINT ["tenantguard"]
CMD ["run", "--config", "/etc/tenantguard/tenantguard.yaml"]
