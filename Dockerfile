# plangate: build with the Rust toolchain, run on a slim Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 plangate
COPY --from=build /src/target/release/plangate /usr/local/bin/plangate
COPY envoy/plans.example.yaml /etc/plangate/plans.yaml
USER plangate
EXPOSE 50051
ENTRYPOINT ["plangate"]
CMD ["serve", "--config", "/etc/plangate/plans.yaml", "--grpc-addr", "0.0.0.0:50051"]
