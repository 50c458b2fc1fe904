#!/usr/bin/env bash
# Quickstart: back up the example data, list, restore into a fresh folder,
# compare, and verify. Needs only cargo; no server.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cargo build --release -q -p respaldo --manifest-path "$root/Cargo.toml"
respaldo="$root/target/release/respaldo"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$here/backup.toml" "$here/data" "$work/"
cd "$work"
set -x
"$respaldo" init
"$respaldo" backup --tag quickstart
"$respaldo" backup                       # unchanged: nothing re-read
"$respaldo" snapshots
"$respaldo" show latest
"$respaldo" restore latest --source documents --target restored
diff -r data restored/data
"$respaldo" dump latest listing | head -5
"$respaldo" verify --read-data
set +x
echo "quickstart OK: backed up, listed, restored (identical) and verified in $work"
