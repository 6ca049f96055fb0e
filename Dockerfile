# keygate: build with the Rust toolchain, run on a slim Debian with only the binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY config ./config
RUN cargo build --release --locked --bin keygate

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/keygate --create-home keygate
COPY --from=build /src/target/release/keygate /usr/local/bin/keygate
COPY config /etc/keygate
WORKDIR /var/lib/keygate
USER keygate
ENV KEYGATE_CONFIG=/etc/keygate/keygate.yaml
EXPOSE 8080
# The example config listens on 127.0.0.1; in a container, set `listen: 0.0.0.0:8080`
# in your own config (mounted over /etc/keygate/keygate.yaml).
ENTRYPOINT ["keygate"]
CMD ["serve"]
