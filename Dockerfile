# syntax=docker/dockerfile:1
#
# followq in a container: a build stage with the Rust toolchain, and a small Debian runtime
# with only the binary, the documented defaults and CA certificates, run as a non-root user.
#
#   docker build -t followq .
#   docker run --rm -e DATABASE_URL=postgres://… followq migrate
#   docker run --rm -e DATABASE_URL=postgres://… -e FOLLOWQ_HTTP__ENABLED=true \
#       -e FOLLOWQ_HTTP__LISTEN=0.0.0.0:9464 -p 127.0.0.1:9464:9464 followq
#
# deploy/compose.yaml runs it with Postgres and the bundled X API simulator on a laptop.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# The whole source tree (see .dockerignore): build scripts and macros read migrations/ and
# config/default.toml at compile time. The cache mounts keep the registry and the compiled
# dependencies between builds; the binary is copied out of them before the step ends.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin followq \
    && install -D -m 0755 target/release/followq /out/followq

# Same Debian release as the build stage, so the binary finds the glibc it was linked with.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# CA certificates: TLS to the X API (and to Postgres or an OTLP collector, when they use it).
# `apt-get clean` too: a base image without Docker's apt clean-up hook otherwise keeps apt's
# package caches and archives (93 MB of this layer before, with a debootstrap-made base).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
RUN groupadd --system --gid 10001 followq \
    && useradd --system --uid 10001 --gid followq --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin followq
COPY --from=build /out/followq /usr/local/bin/followq
# The documented defaults (also built into the binary); mount another directory over it, or
# set FOLLOWQ_ENV and add config/<env>.toml, to change them. Environment variables win.
COPY config/ /etc/followq/
ENV FOLLOWQ_CONFIG_DIR=/etc/followq
USER 10001:10001
# The operations listener ([http]); off and on loopback unless FOLLOWQ_HTTP__ENABLED=true and
# FOLLOWQ_HTTP__LISTEN=0.0.0.0:9464 are set.
EXPOSE 9464
# SIGTERM starts the graceful stop (worker.shutdown_grace, 30 s by default): give the
# container longer than that to stop (docker stop -t 45, stop_grace_period, or
# terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["followq"]
CMD ["run"]
