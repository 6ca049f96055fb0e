# keygate: build with the Rust toolchain, run on a slim Debian with only the binary (and
# curl, for the health check).
#
#   docker build -t keygate .
#   docker run -p 8080:8080 -p 8081:8081 -e KEYGATE_UPSTREAM=http://api.internal:9000 keygate
#
# The image's config is config/container.yaml (both listeners on 0.0.0.0); mount your own
# over /etc/keygate/keygate.yaml. Keys live in the /var/lib/keygate volume.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# Read by the build itself: the demo's config and the admin API's OpenAPI document are
# built into the binary.
COPY config ./config
COPY docs ./docs
RUN cargo build --release --locked --bin keygate

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/keygate --create-home keygate
COPY --from=build /src/target/release/keygate /usr/local/bin/keygate
COPY config/container.yaml /etc/keygate/keygate.yaml
COPY config/keygate.yaml /etc/keygate/example.yaml
WORKDIR /var/lib/keygate
USER keygate
ENV KEYGATE_CONFIG=/etc/keygate/keygate.yaml \
    KEYGATE_UPSTREAM=http://127.0.0.1:9000
# The proxy and the admin API (health, metrics, keys).
EXPOSE 8080 8081
VOLUME ["/var/lib/keygate"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8081/healthz || exit 1
ENTRYPOINT ["keygate"]
CMD ["serve"]
