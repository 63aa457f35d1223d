# salespulse container image.
#   docker build -t salespulse .
#   docker run --rm -p 127.0.0.1:9898:9898 -v $PWD/my.toml:/etc/salespulse/salespulse.toml:ro salespulse
# The builder compiles the bundled librdkafka (rdkafka-sys), which needs cmake, make, a C compiler
# and zlib headers. The proto files are compiled by protox (pure Rust): no protoc is needed.

FROM rust:1-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake make gcc g++ zlib1g-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace: crates/*/Cargo.toml name targets under tests/ and benches/, so those must be
# present for cargo to load the manifests even though only the binary is built.
COPY . .
RUN cargo build --release --locked -p salespulse \
 && install -D -m 0755 target/release/salespulse /out/salespulse
# Default config: the repository example, listening on all interfaces (inside a container
# 127.0.0.1 is unreachable from outside). Mount your own at /etc/salespulse/salespulse.toml.
RUN sed 's/^listen = "127\.0\.0\.1:9898"/listen = "0.0.0.0:9898"/' deploy/salespulse.toml > /out/salespulse.toml \
 && grep -q '^listen = "0\.0\.0\.0:9898"' /out/salespulse.toml

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 salespulse \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin salespulse \
 && mkdir -p /etc/salespulse /var/lib/salespulse \
 && chown 10001:10001 /var/lib/salespulse
COPY --from=builder /out/salespulse /usr/local/bin/salespulse
COPY --from=builder /out/salespulse.toml /etc/salespulse/salespulse.toml
# Baseline snapshots ([anomalies] snapshot_path) go here when configured; a named volume mounted
# here inherits the non-root ownership.
VOLUME ["/var/lib/salespulse"]
# Numeric so that Kubernetes runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 9898
# No HEALTHCHECK: the slim image has no HTTP client. Orchestrators probe /healthz and /readyz.
ENTRYPOINT ["salespulse"]
CMD ["run", "--config", "/etc/salespulse/salespulse.toml"]
