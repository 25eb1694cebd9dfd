# plangate: build with the Rust toolchain, run on a distroless base as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
# build.rs compiles the management API's .proto files (with protox: no protoc needed).
COPY proto ./proto
COPY src ./src
# The manifest declares the criterion benches: cargo refuses to build without their files.
COPY benches ./benches
# The revision for plangate_build_info (the image has no .git):
# docker build --build-arg PLANGATE_REVISION=$(git rev-parse --short=12 HEAD) .
ARG PLANGATE_REVISION=""
RUN cargo build --release --locked --bin plangate

# The state directory, owned by the runtime image's non-root user (65532: distroless "nonroot").
RUN mkdir -p /state/var/lib/plangate && chown 65532:65532 /state/var/lib/plangate

# Runtime: distroless (glibc, CA certificates, no shell, no package manager), non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/plangate /usr/local/bin/plangate
COPY --from=build --chown=65532:65532 /state/var/lib/plangate /var/lib/plangate
COPY envoy/plans.example.yaml /etc/plangate/plans.yaml
USER 65532:65532
VOLUME /var/lib/plangate
EXPOSE 50051 9090
# Alive while the admin address answers /healthz (use `plangate health --ready` for readiness).
# The address comes from the environment: PLANGATE_ADMIN, else PLANGATE_ADMIN_ADDR (what serve
# listens on), else http://127.0.0.1:9090. With --admin-tls-*, set
# PLANGATE_ADMIN=https://127.0.0.1:9090 and PLANGATE_ADMIN_CA (PLANGATE_ADMIN_CERT/_KEY under
# mTLS): the HEALTHCHECK follows.
HEALTHCHECK --interval=10s --timeout=3s CMD ["plangate", "health"]
ENTRYPOINT ["plangate"]
CMD ["serve", "--config", "/etc/plangate/plans.yaml", "--grpc-addr", "0.0.0.0:50051", "--data-dir", "/var/lib/plangate"]
