# barnabas: build once, run slim and unprivileged.
#   docker build -t barnabas .
#   docker run -p 8080:8080 -p 1883:1883 -p 5672:5672 -p 9092:9092 barnabas
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ make perl pkg-config zlib1g-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p barnabas \
 && install -m 0755 target/release/barnabas /usr/local/bin/barnabas

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/barnabas --create-home barnabas
COPY --from=build /usr/local/bin/barnabas /usr/local/bin/barnabas
COPY config/barnabas.toml /etc/barnabas/barnabas.toml
USER barnabas
WORKDIR /var/lib/barnabas
EXPOSE 8080 1883 5672 9092
# Embedded broker on all interfaces, advertised as localhost (publish 9092 to reach it from
# the host); add `--data-dir /var/lib/barnabas/data` and a volume to keep data, or
# `--kafka-bootstrap HOST:PORT` instead of --embedded-kafka to use an external cluster.
ENTRYPOINT ["barnabas"]
CMD ["run", "--embedded-kafka=0.0.0.0:9092", "--http-listen", "0.0.0.0:8080"]
