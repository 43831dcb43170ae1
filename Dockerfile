# barnabas, production image: the gateway alone, in front of an external Kafka cluster.
#
#   docker build -t barnabas:0.1.0 .
#   docker run --rm -p 8080:8080 -p 1883:1883 -p 5672:5672 \
#     -e BARNABAS_KAFKA__BOOTSTRAP_SERVERS=kafka-0.kafka:9092 barnabas:0.1.0
#   docker run --rm -v "$PWD/barnabas.toml:/etc/barnabas/barnabas.toml:ro" barnabas:0.1.0 \
#     run --config /etc/barnabas/barnabas.toml --log-format json
#
# - Built without the embedded broker (`--no-default-features`): nothing in this image can
#   open a Kafka port. Without a Kafka cluster (kafka.bootstrap_servers, the env var above or
#   --kafka-bootstrap) it exits at once with code 2 and says so. The zero-setup image with the
#   embedded broker is Dockerfile.demo.
# - Release binary stripped, without debug info (CARGO_PROFILE_RELEASE_*).
# - Runs as the numeric user 10001:10001, so Kubernetes' runAsNonRoot can verify it; it writes
#   nothing, so a read-only root filesystem suits it.
# - No config file is baked in: mount one (examples/kubernetes does, from a ConfigMap) or use
#   BARNABAS_<SECTION>__<KEY> variables.
#
# No container engine runs on the build machine: this file is checked by tests/kubernetes.rs
# (parsed, not built).
FROM rust:1.95-bookworm AS build
# Cargo feature flags of the build; the default leaves the embedded broker (tansu) out.
ARG CARGO_FEATURE_FLAGS=--no-default-features
ENV CARGO_PROFILE_RELEASE_STRIP=true \
    CARGO_PROFILE_RELEASE_DEBUG=false
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ make perl pkg-config zlib1g-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p barnabas ${CARGO_FEATURE_FLAGS} \
 && install -m 0755 target/release/barnabas /usr/local/bin/barnabas

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 barnabas \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin barnabas
COPY --from=build /usr/local/bin/barnabas /usr/local/bin/barnabas
USER 10001:10001
# HTTP, MQTT, AMQP, and their TLS listeners (HTTPS, MQTTS, AMQPS) when configured.
EXPOSE 8080 1883 5672 8443 8883 5671
ENTRYPOINT ["/usr/local/bin/barnabas"]
CMD ["run", "--log-format", "json"]
