# respaldo's container image: the binary, the clients it drives
# (pg_dump/pg_restore/psql, redis-server for Redis drills, the MariaDB/MySQL
# client for `command` sources), CA certificates and time zones, running as
# the unprivileged user `respaldo` (uid 10001).
#
#   docker build -t respaldo .                     # compiles respaldo inside
#   docker run --rm -v "$PWD/backup.toml:/etc/respaldo/backup.toml:ro" \
#       -v backups:/backups respaldo backup
#
# Stages: `runtime-base` (Debian, clients, user), `prebuilt` (a binary built
# outside: `--target prebuilt --build-arg BINARY=path/in/context`, as CI and
# packagers do), `build` (cargo, release profile) and `runtime` (the default).
# With BuildKit only the stages the target needs are built; the classic
# builder builds every stage before the target, which is why `prebuilt`
# comes before `build`.
#
# BASE and RUST name the base images; a machine without a registry passes
# local ones (the test suite imports a debootstrap'ed Debian as BASE:
# crates/testing/src/image.rs).
ARG BASE=debian:bookworm-slim
ARG RUST=rust:1-bookworm

FROM ${BASE} AS runtime-base
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates tzdata postgresql-client redis-server mariadb-client \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 respaldo \
 && useradd --system --uid 10001 --gid respaldo --home-dir /var/lib/respaldo \
      --shell /usr/sbin/nologin respaldo \
 && install -d -o respaldo -g respaldo -m 0750 /var/lib/respaldo /backups /etc/respaldo
# The configuration is mounted here; the run history and caches live in
# /var/lib/respaldo (a volume keeps them across runs); /backups is where a
# local repository goes (a volume, owned by respaldo).
ENV RESPALDO_CONFIG=/etc/respaldo/backup.toml \
    RESPALDO_STATE_DIR=/var/lib/respaldo
WORKDIR /var/lib/respaldo
VOLUME ["/var/lib/respaldo", "/backups"]
USER respaldo:respaldo
ENTRYPOINT ["/usr/local/bin/respaldo"]
CMD ["--help"]

FROM runtime-base AS prebuilt
ARG BINARY=target/release/respaldo
COPY ${BINARY} /usr/local/bin/respaldo

FROM ${RUST} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p respaldo \
 && install -m 0755 target/release/respaldo /usr/local/bin/respaldo

FROM runtime-base AS runtime
COPY --from=build /usr/local/bin/respaldo /usr/local/bin/respaldo
