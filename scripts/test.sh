#!/usr/bin/env bash
# Installs what the test suite needs and runs every test. CI runs exactly this
# (.ci/run). Safe to re-run; installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in "zstd:zstd" "gdb:gdb" "/usr/lib/postgresql/15/bin/postgres:postgresql" "runuser:util-linux" "influxd:influxdb" "redis-server:redis-server" "busybox:busybox-static" "systemd-analyze:systemd" "openssl:openssl" "setfacl:acl" "getfattr:attr" "setcap:libcap2-bin" "man:man-db" "script:bsdutils" "debootstrap:debootstrap" "docker-compose:docker-compose" "objcopy:binutils" "mariadb-install-db:mariadb-server" "mariadb-dump:mariadb-client" "fusermount3:fuse3"; do
  cmd="${pair%%:*}"; pkg="${pair##*:}"
  if [ "${cmd#/}" != "$cmd" ]; then ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=("$pkg"); continue; fi
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  fi
fi

# An S3-compatible server for the object-store tests (moto's server mode).
command -v moto_server >/dev/null 2>&1 || python3 -m pip install --quiet 'moto[server]'
# PyYAML reads the Kubernetes example's manifests.
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml

# Build once (the binary the end-to-end tests run), then run every test.
cargo build --workspace --all-targets --locked
# The end-to-end tests run this binary (built with the workspace's features)
# instead of building their own.
export RESPALDO_BIN="$PWD/target/debug/respaldo"
cargo test --workspace --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"
