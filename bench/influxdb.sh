#!/usr/bin/env bash
# Benchmark the influxdb source (1.x, against a throwaway influxd): export and
# restore throughput (points/s) and peak RSS of respaldo (budget: 200 MiB),
# next to `influx -execute 'SELECT * …' -format csv`. The restore time
# includes the point count check (a second chunked read of the restored
# data). InfluxDB 2.x cannot be benchmarked here (no 2.x server).
#
# Usage: bench/influxdb.sh [POINTS]          (default 10000000)
#
# Environment:
#   RESPALDO    respaldo binary (default: <repo>/target/release/respaldo,
#               built with `cargo build --release -p respaldo` if missing)
#   BENCH_DIR   work dir (default /tmp/respaldo-bench-influxdb); removed at the end
#   HTTP_PORT, RPC_PORT   ports for the throwaway influxd (default 18686, 18688)
#
# Needs influxd and influx (Debian: influxdb influxdb-client), python3, curl
# and GNU time (/usr/bin/time). The server is started here and killed at the end.
set -euo pipefail

POINTS=${1:-10000000}
BENCH_DIR=${BENCH_DIR:-/tmp/respaldo-bench-influxdb}
HTTP_PORT=${HTTP_PORT:-18686}
RPC_PORT=${RPC_PORT:-18688}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
RESPALDO=${RESPALDO:-$REPO_ROOT/target/release/respaldo}
URL="http://127.0.0.1:$HTTP_PORT"

die() { echo "bench: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }
for c in influxd influx python3 curl /usr/bin/time; do
    command -v "$c" >/dev/null || die "$c not found"
done
[[ $POINTS =~ ^[0-9]+$ && $POINTS -ge 1 ]] || die "POINTS must be a positive integer"
if [[ ! -x $RESPALDO ]]; then
    log "building respaldo (release)"
    (cd "$REPO_ROOT" && cargo build --release -q -p respaldo)
fi

rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR"
cat > "$BENCH_DIR/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$RPC_PORT"
[meta]
  dir = "$BENCH_DIR/meta"
[data]
  dir = "$BENCH_DIR/data"
  wal-dir = "$BENCH_DIR/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$HTTP_PORT"
  log-enabled = false
[monitor]
  store-enabled = false
CONF
influxd -config "$BENCH_DIR/influxdb.conf" >"$BENCH_DIR/influxd.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$BENCH_DIR"' EXIT
for _ in $(seq 200); do curl -sf "$URL/ping" >/dev/null && break; sleep 0.1; done
curl -sf "$URL/ping" >/dev/null || die "influxd did not start (see $BENCH_DIR/influxd.log)"

q() { curl -sf -XPOST "$URL/query" --data-urlencode "q=$1" >/dev/null; }
q "CREATE DATABASE bench"
log "writing $POINTS points"
python3 - "$POINTS" "$URL" <<'PY'
import gzip, sys, urllib.request
n, url = int(sys.argv[1]), sys.argv[2]
base, batch = 1_600_000_000_000_000_000, 200_000
for start in range(0, n, batch):
    lines = []
    for i in range(start, min(n, start + batch)):
        lines.append("meter,site=s%d,phase=L%d watts=%r,count=%di,ok=%s %d"
                     % (i % 100, i % 3, i * 0.25, i, "true" if i % 2 else "false", base + i * 1_000_000))
    body = gzip.compress(("\n".join(lines) + "\n").encode(), 1)
    req = urllib.request.Request(url + "/write?db=bench&precision=ns", data=body,
                                 headers={"Content-Encoding": "gzip"})
    urllib.request.urlopen(req).read()
PY

cd "$BENCH_DIR"
cat > backup.toml <<TOML
[repository]
url = "repo"
[sources.metrics]
type = "influxdb"
url = "$URL"
databases = ["bench"]
TOML
"$RESPALDO" -c backup.toml init >/dev/null

measure() { # label command...  -> prints seconds and peak RSS (MiB)
    local label=$1; shift
    /usr/bin/time -f "%e %M" -o "$BENCH_DIR/time.txt" "$@" >/dev/null 2>"$BENCH_DIR/err.txt" \
        || { cat "$BENCH_DIR/err.txt" >&2; die "$label failed"; }
    read -r secs kib < "$BENCH_DIR/time.txt"
    python3 -c "import sys; s=max(float(sys.argv[2]),0.001); m=int(sys.argv[4])/1024; print('%-28s %8.1f s %12.0f points/s  peak RSS %6.0f MiB%s' % (sys.argv[1], s, int(sys.argv[3])/s, m, '' if m < 200 else '  (over the 200 MiB budget)'))" \
        "$label" "$secs" "$POINTS" "$kib"
}

echo "points: $POINTS"
measure "respaldo backup" "$RESPALDO" -c backup.toml backup
measure "influx -format csv export" influx -host 127.0.0.1 -port "$HTTP_PORT" -database bench \
    -execute 'SELECT * FROM meter' -format csv
measure "respaldo restore (--target)" "$RESPALDO" -c backup.toml restore latest --source metrics \
    --target "$URL/copy"
echo "repository size: $(du -sh repo | cut -f1)"
