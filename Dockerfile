# fhir-registers: build with the pinned toolchain, run as a non-root user on Debian slim.
#   docker build -t fhir-registers . && docker run -p 8080:8080 fhir-registers
# Add `-v fhir-registers-data:/app/data` to keep imported releases between containers (without it
# Docker makes an anonymous volume there, see VOLUME below). Kubernetes: deploy/kubernetes/.

# ---- build ----------------------------------------------------------------------------------
# Same compiler as rust-toolchain.toml (channel 1.95.0); rustup installs exactly that channel
# (and its listed components) on the first cargo call if the image's patch release differs.
FROM rust:1.95-bookworm AS builder
WORKDIR /build

COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
COPY crates/ crates/
COPY src/ src/
# Cargo.toml declares the bench target benches/store.rs; the manifest does not load without it.
COPY benches/ benches/

RUN cargo build --release --locked --bin fhir-registers

# ---- run ------------------------------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates for HTTPS upstreams (sync); curl for the HEALTHCHECK below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 fhir \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /app fhir

WORKDIR /app
COPY --from=builder /build/target/release/fhir-registers /usr/local/bin/fhir-registers
# The mapping files and the shipped register data they point at (mappings/data/).
COPY mappings/ mappings/
RUN mkdir -p /app/data && chown fhir:fhir /app/data
# The data directory outlives the container. Declared after the chown: a new volume starts as a
# copy of the image's (empty, owned by fhir) directory.
VOLUME ["/app/data"]

USER 10001:10001
ENV FHIR_REGISTERS_LISTEN=0.0.0.0:8080 \
    FHIR_REGISTERS_DATA_DIR=/app/data
EXPOSE 8080

# Docker's own check (Kubernetes ignores it and uses the probes of deploy/kubernetes). /health
# answers once the registers are loaded: the first start imports the shipped ones first, hence the
# start period. The port is the one FHIR_REGISTERS_LISTEN ends with.
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${FHIR_REGISTERS_LISTEN##*:}/health" || exit 1

ENTRYPOINT ["fhir-registers"]
CMD ["serve"]
