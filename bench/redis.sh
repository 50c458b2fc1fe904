#!/usr/bin/env bash
# Benchmark the redis source: backup vs `redis-cli --rdb`, live restore
# throughput vs `redis-cli --pipe` of the same data.
#
# Usage: bench/redis.sh [KEYS]            (default 1000000)
#
# Environment:
#   RESPALDO    respaldo binary (default: <repo>/target/release/respaldo,
#               built with `cargo build --release -p respaldo` if missing)
#   BENCH_DIR   work dir (default /tmp/respaldo-bench-redis)
#
# Data: KEYS keys of mixed types (1/5 each: 100-byte strings, 3-field hashes,
# 3-item lists, 3-member sets, 3-member sorted sets) in db 0, loaded with
# `redis-cli --pipe` into a throwaway redis-server on a free port.
set -euo pipefail

KEYS=${1:-1000000}
BENCH_DIR=${BENCH_DIR:-/tmp/respaldo-bench-redis}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

die() { echo "bench: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l | xargs printf '%.2f'; }

[[ $KEYS =~ ^[0-9]+$ && $KEYS -ge 5 ]] || die "KEYS must be an integer >= 5"
for t in redis-server redis-cli python3 bc; do
    command -v "$t" >/dev/null || die "$t not found (apt-get install redis-server python3 bc)"
done

RESPALDO=${RESPALDO:-$REPO_ROOT/target/release/respaldo}
if [[ ! -x $RESPALDO ]]; then
    log "building $RESPALDO"
    (cd "$REPO_ROOT" && cargo build --release -p respaldo)
fi

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/data"
cd "$BENCH_DIR"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --dir "$BENCH_DIR/data" --save "" \
    --appendonly no --repl-diskless-sync-delay 0 --enable-debug-command local \
    --daemonize yes --logfile "$BENCH_DIR/redis.log" --pidfile "$BENCH_DIR/redis.pid"
trap 'redis-cli -p "$PORT" SHUTDOWN NOSAVE >/dev/null 2>&1 || true' EXIT
for _ in $(seq 100); do redis-cli -p "$PORT" PING 2>/dev/null | grep -q PONG && break; sleep 0.1; done
CLI=(redis-cli -p "$PORT")

log "generating $KEYS keys"
python3 - "$KEYS" > data.resp <<'PY'
import sys
n = int(sys.argv[1]); out = sys.stdout.buffer
def cmd(*a):
    b = [b"*%d\r\n" % len(a)]
    for x in a:
        x = x if isinstance(x, bytes) else str(x).encode()
        b.append(b"$%d\r\n%s\r\n" % (len(x), x))
    out.write(b"".join(b))
pad = b"x" * 90
for i in range(n):
    t = i % 5
    if t == 0: cmd("SET", f"s:{i}", pad + str(i).encode())
    elif t == 1: cmd("HSET", f"h:{i}", "a", i, "b", "two", "c", "three")
    elif t == 2: cmd("RPUSH", f"l:{i}", i, "b", "c")
    elif t == 3: cmd("SADD", f"set:{i}", i, "b", "c")
    else: cmd("ZADD", f"z:{i}", 1, i, 2, "b", 3, "c")
PY

t0=$(now); "${CLI[@]}" --pipe < data.resp >/dev/null; t1=$(now)
PIPE=$(secs "$t0" "$t1")
[[ $("${CLI[@]}" DBSIZE) == "$KEYS" ]] || die "loading failed"
DIGEST=$("${CLI[@]}" DEBUG DIGEST 2>/dev/null || echo "n/a")

t0=$(now); "${CLI[@]}" --rdb "$BENCH_DIR/cli.rdb" >/dev/null 2>&1; t1=$(now)
CLIRDB=$(secs "$t0" "$t1")
RDB_MIB=$(( $(stat -c %s "$BENCH_DIR/cli.rdb") / 1048576 ))

cat > backup.toml <<TOML
[repository]
url = "repo"
[sources.file]
type = "redis"
url = "redis://127.0.0.1:$PORT"
transfer = "file"
[sources.sync]
type = "redis"
url = "redis://127.0.0.1:$PORT"
transfer = "replication"
TOML
R=("$RESPALDO" -c "$BENCH_DIR/backup.toml")
"${R[@]}" init >/dev/null
t0=$(now); "${R[@]}" backup --source sync >/dev/null 2>&1; t1=$(now)
BSYNC=$(secs "$t0" "$t1")
t0=$(now); "${R[@]}" backup --source file >/dev/null 2>&1; t1=$(now)
BFILE=$(secs "$t0" "$t1")

"${CLI[@]}" FLUSHALL >/dev/null
t0=$(now); "${R[@]}" restore latest --source sync >/dev/null 2>&1; t1=$(now)
REST=$(secs "$t0" "$t1")
[[ $("${CLI[@]}" DBSIZE) == "$KEYS" ]] || die "restore gave $("${CLI[@]}" DBSIZE) keys"
AFTER=$("${CLI[@]}" DEBUG DIGEST 2>/dev/null || echo "n/a")
[[ $AFTER == "$DIGEST" ]] || die "digest differs after restore"

kps() { echo "$KEYS / $1" | bc -l | xargs printf '%.0f'; }
echo
echo "redis bench: $KEYS keys, RDB $RDB_MIB MiB"
printf '%-40s %8s s\n' "redis-cli --rdb" "$CLIRDB"
printf '%-40s %8s s  (%s x)\n' "respaldo backup (replication)" "$BSYNC" "$(echo "$BSYNC / $CLIRDB" | bc -l | xargs printf '%.2f')"
printf '%-40s %8s s  (%s x)\n' "respaldo backup (BGSAVE + file)" "$BFILE" "$(echo "$BFILE / $CLIRDB" | bc -l | xargs printf '%.2f')"
printf '%-40s %8s s  %10s keys/s\n' "redis-cli --pipe (load)" "$PIPE" "$(kps "$PIPE")"
printf '%-40s %8s s  %10s keys/s\n' "respaldo restore (live, RESTORE)" "$REST" "$(kps "$REST")"
