#!/usr/bin/env bash
# The demo stack at size: PostgreSQL, Redis, InfluxDB 1.x, two Docker volumes
# and a files tree in one backup.toml (the layout of tests/tests/e2e/drill.rs).
# Times `respaldo backup`, the full disaster restore (`restore latest
# --force`, the measured whole-stack RTO) and `test-restore`; checks every
# source independently after the restore. Targets: RTO <= 300 s on the 2-core
# development VM, peak RSS < 200 MiB.
#
# Usage: bench/stack.sh
#        STACK_SMALL=1 bench/stack.sh        (smoke run: tiny sizes)
#
# Environment (sizes: default / STACK_SMALL=1):
#   STACK_PG_SCALE        pgbench -i scale              50 / 2
#   STACK_REDIS_KEYS      Redis keys (mixed types)      1000000 / 20000
#   STACK_INFLUX_POINTS   InfluxDB points               10000000 / 100000
#   STACK_VOLUME_MIB      MiB per Docker volume (two)   512 / 16
#   STACK_FILES_MIB       gen-tree.py files tree, MiB   1024 / 32
#   STACK_SEED            generator seed (default 42)
#   STACK_RTO_TARGET_S    RTO target, s (default 300)
#   STACK_RSS_TARGET_MIB  peak RSS target, MiB (default 200)
#   STACK_BUSYBOX_IMAGE   busybox image, imported from the host's busybox-static
#                         when missing (default respaldo-bench-busybox:latest)
#   STACK_KEEP=1          keep the data, repository and servers' dirs
#   PG_PORT REDIS_PORT INFLUX_HTTP_PORT INFLUX_RPC_PORT   (default: free ports)
#   RESPALDO              binary (default <repo>/target/release/respaldo; never built here)
#   BENCH_DIR             work dir (default /tmp/respaldo-bench-stack)
#
# Needs PostgreSQL 15 (/usr/lib/postgresql/15/bin), pgbench, redis-server,
# redis-cli, influxd (1.x), docker (a running engine), busybox-static,
# python3, curl and GNU time. Servers, the container and the volumes are
# started here and removed on exit. The results go to stdout and
# $BENCH_DIR/results.md; each step's output is in $BENCH_DIR/logs/.
# Exit status 1 when a step fails or a source is not identical after the
# restore; missed targets are reported (MISSED) but do not fail the run.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
die() { echo "stack bench: error: $*" >&2; exit 1; }
log() { echo "stack bench: $*" >&2; }

# ------------------------------------------------------------------ sizes --
if [[ ${STACK_SMALL:-0} == 1 ]]; then
    d_scale=2 d_keys=20000 d_points=100000 d_vol=16 d_files=32
else
    d_scale=50 d_keys=1000000 d_points=10000000 d_vol=512 d_files=1024
fi
PG_SCALE=${STACK_PG_SCALE:-$d_scale}
REDIS_KEYS=${STACK_REDIS_KEYS:-$d_keys}
INFLUX_POINTS=${STACK_INFLUX_POINTS:-$d_points}
VOLUME_MIB=${STACK_VOLUME_MIB:-$d_vol}
FILES_MIB=${STACK_FILES_MIB:-$d_files}
SEED=${STACK_SEED:-42}
RTO_TARGET_S=${STACK_RTO_TARGET_S:-300}
RSS_TARGET_MIB=${STACK_RSS_TARGET_MIB:-200}
BUSYBOX=${STACK_BUSYBOX_IMAGE:-respaldo-bench-busybox:latest}
BENCH_DIR=${BENCH_DIR:-/tmp/respaldo-bench-stack}
for v in PG_SCALE REDIS_KEYS INFLUX_POINTS VOLUME_MIB FILES_MIB SEED RTO_TARGET_S RSS_TARGET_MIB; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "STACK_$v must be a positive integer, got '${!v}'"
done
((REDIS_KEYS >= 5)) || die "STACK_REDIS_KEYS must be >= 5"
((VOLUME_MIB >= 4)) || die "STACK_VOLUME_MIB must be >= 4"

# ----------------------------------------------------------------- checks --
PGBIN=/usr/lib/postgresql/15/bin
[[ -x $PGBIN/postgres && -x $PGBIN/initdb ]] || die "PostgreSQL 15 server not found in $PGBIN (apt-get install postgresql-15)"
for c in pgbench redis-server redis-cli influxd docker python3 curl; do
    command -v "$c" >/dev/null || die "$c not found on PATH"
done
[[ -x $PGBIN/pgbench ]] || die "pgbench not found in $PGBIN"
[[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time) not found (apt-get install time)"
/usr/bin/time -f '%e %M' -o /dev/null true 2>/dev/null || die "/usr/bin/time is not GNU time (needs -f/-o)"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info failed)"
RESPALDO=${RESPALDO:-$REPO_ROOT/target/release/respaldo}
[[ -x $RESPALDO ]] || die "respaldo binary not found: $RESPALDO (run \`cargo build --release -p respaldo\`, or set RESPALDO)"
RESPALDO=$(cd "$(dirname "$RESPALDO")" && pwd)/$(basename "$RESPALDO")
AS=()
if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user for initdb/postgres"
    AS=(runuser -u postgres --)
fi

# -------------------------------------------------------------- work dir --
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/logs"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
chmod 777 "$BENCH_DIR"                 # the postgres user writes data and socket here
LOGS=$BENCH_DIR/logs
APP=$BENCH_DIR/app
export XDG_CACHE_HOME=$BENCH_DIR/cache
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PG_PORT=${PG_PORT:-$(free_port)}
REDIS_PORT=${REDIS_PORT:-$(free_port)}
INFLUX_HTTP_PORT=${INFLUX_HTTP_PORT:-$(free_port)}
INFLUX_RPC_PORT=${INFLUX_RPC_PORT:-$(free_port)}
PREFIX=respaldo-stack-$$
VOL1=$PREFIX-grafana
VOL2=$PREFIX-loki
WEB=$PREFIX-web

# ---------------------------------------------------------------- cleanup --
PG_STARTED=0 REDIS_STARTED=0 INFLUX_PID="" DOCKER_STARTED=0
cleanup() {
    local rc=$?
    set +e
    if ((DOCKER_STARTED)); then
        docker rm -f "$WEB" >/dev/null 2>&1
        docker volume rm -f "$VOL1" "$VOL2" >/dev/null 2>&1
    fi
    ((REDIS_STARTED)) && redis-cli -p "$REDIS_PORT" SHUTDOWN NOSAVE >/dev/null 2>&1
    [[ -n $INFLUX_PID ]] && { kill "$INFLUX_PID" 2>/dev/null; wait "$INFLUX_PID" 2>/dev/null; }
    ((PG_STARTED)) && "${AS[@]}" "$PGBIN/pg_ctl" -D "$BENCH_DIR/pg" -m fast stop >/dev/null 2>&1
    if [[ ${STACK_KEEP:-0} != 1 ]]; then
        rm -rf "$BENCH_DIR/pg" "$BENCH_DIR/redis" "$BENCH_DIR/influx" "$APP" "$BENCH_DIR/repo" "$XDG_CACHE_HOME"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- servers --
log "PostgreSQL 15 on port $PG_PORT"
"${AS[@]}" "$PGBIN/initdb" -D "$BENCH_DIR/pg" -U postgres --auth=trust -E UTF8 --no-locale --no-sync \
    >"$LOGS/initdb.log" 2>&1 || { cat "$LOGS/initdb.log" >&2; die "initdb failed"; }
PG_STARTED=1
"${AS[@]}" "$PGBIN/pg_ctl" -D "$BENCH_DIR/pg" -l "$BENCH_DIR/pg.log" -w \
    -o "-p $PG_PORT -k $BENCH_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=256MB" \
    start >/dev/null || die "PostgreSQL did not start (see $BENCH_DIR/pg.log)"
export PGHOST=127.0.0.1 PGPORT=$PG_PORT PGUSER=postgres
PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/bench"

log "redis-server on port $REDIS_PORT"
mkdir -p "$BENCH_DIR/redis"
REDIS_STARTED=1
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$BENCH_DIR/redis" --save "" \
    --appendonly no --repl-diskless-sync-delay 0 --enable-debug-command yes \
    --daemonize yes --logfile "$BENCH_DIR/redis/redis.log" --pidfile "$BENCH_DIR/redis/redis.pid"
CLI=(redis-cli -p "$REDIS_PORT")
for _ in $(seq 100); do "${CLI[@]}" PING 2>/dev/null | grep -q PONG && break; sleep 0.1; done
"${CLI[@]}" PING 2>/dev/null | grep -q PONG || die "redis-server did not start (see $BENCH_DIR/redis/redis.log)"

log "influxd on port $INFLUX_HTTP_PORT"
mkdir -p "$BENCH_DIR/influx"
cat >"$BENCH_DIR/influx/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$INFLUX_RPC_PORT"
[meta]
  dir = "$BENCH_DIR/influx/meta"
  logging-enabled = false
[data]
  dir = "$BENCH_DIR/influx/data"
  wal-dir = "$BENCH_DIR/influx/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$INFLUX_HTTP_PORT"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
CONF
influxd -config "$BENCH_DIR/influx/influxdb.conf" >"$BENCH_DIR/influx/influxd.log" 2>&1 &
INFLUX_PID=$!
INFLUX_URL="http://127.0.0.1:$INFLUX_HTTP_PORT"
for _ in $(seq 300); do curl -sf "$INFLUX_URL/ping" >/dev/null && break; sleep 0.1; done
curl -sf "$INFLUX_URL/ping" >/dev/null || die "influxd did not start (see $BENCH_DIR/influx/influxd.log)"
iq() { # InfluxQL statement [db] -> JSON on stdout, dies on an error
    local out
    out=$(curl -sf -XPOST "$INFLUX_URL/query" --data-urlencode "q=$1" --data-urlencode "db=${2:-}" -d epoch=ns) \
        || die "influx query failed: $1"
    [[ $out != *'"error"'* ]] || die "influx query failed: $1: $out"
    printf '%s\n' "$out"
}

# ----------------------------------------------------------------- docker --
# The image as crates/testing/src/docker.rs builds it: /bin/busybox and its
# applets as symlinks, imported (no registry needed).
if ! docker image inspect "$BUSYBOX" >/dev/null 2>&1; then
    bb=""
    for p in /bin/busybox /usr/bin/busybox; do [[ -x $p ]] && { bb=$p; break; }; done
    [[ -n $bb ]] || die "busybox not found (apt-get install busybox-static)"
    log "importing $BUSYBOX from $bb"
    root=$BENCH_DIR/bbroot
    mkdir -p "$root/bin" "$root/tmp"
    cp "$bb" "$root/bin/busybox"
    for a in $("$bb" --list); do [[ $a == busybox ]] || ln -s busybox "$root/bin/$a"; done
    tar -C "$root" -cf "$BENCH_DIR/bbroot.tar" .
    docker import "$BENCH_DIR/bbroot.tar" "$BUSYBOX" >/dev/null || die "docker import failed"
    rm -rf "$root" "$BENCH_DIR/bbroot.tar"
fi
DOCKER_STARTED=1
docker volume create "$VOL1" >/dev/null
docker volume create "$VOL2" >/dev/null
vsh() { # VOLUME SCRIPT: runs SCRIPT in a busybox container with VOLUME at /v
    docker run --rm -v "$1:/v" "$BUSYBOX" sh -c "$2"
}
# Half random (32 MiB files), half compressible text (unique number runs),
# a directory of small files, a symlink and an empty directory.
fill_volume() { # VOLUME MIB TAG
    local half=$(($2 / 2)) big=32
    local text=$(($2 - half - 1)) # 1 MiB left for the small files
    log "filling volume $1 ($2 MiB)"
    vsh "$1" "set -e
        mkdir -p /v/$3/random /v/$3/text /v/$3/small /v/empty /v/dash
        echo '{\"panels\": 3}' > /v/dash/main.json
        left=$half; i=0
        while [ \$left -gt 0 ]; do n=\$left; [ \$n -gt $big ] && n=$big
            dd if=/dev/urandom of=/v/$3/random/r\$i.bin bs=1M count=\$n 2>/dev/null
            left=\$((left - n)); i=\$((i + 1)); done
        left=$text; i=0
        while [ \$left -gt 0 ]; do n=\$left; [ \$n -gt $big ] && n=$big
            seq \$((i * 100000000 + 1)) 999999999 | sed 's/\$/ ok $3 sample/' | head -c \$((n * 1048576)) > /v/$3/text/t\$i.log
            left=\$((left - n)); i=\$((i + 1)); done
        i=0
        while [ \$i -lt 200 ]; do seq \$i \$((i + 400)) > /v/$3/small/s\$i.txt; i=\$((i + 1)); done
        ln -s dash/main.json /v/current.json"
}
fill_volume "$VOL1" "$VOLUME_MIB" grafana
fill_volume "$VOL2" "$VOLUME_MIB" loki
# sh as PID 1 with a TERM trap: a bare `sleep` ignores SIGTERM there, and
# every `docker stop` would wait its 10 s timeout (like no real app would).
docker run -d --name "$WEB" -v "$VOL1:/data" "$BUSYBOX" \
    sh -c 'trap "exit 0" TERM; sleep 86400 & wait' >/dev/null

# ------------------------------------------------------------------- load --
log "pgbench -i -s $PG_SCALE"
"$PGBIN/createdb" bench
"$PGBIN/pgbench" -q -i -s "$PG_SCALE" bench >"$LOGS/pgbench.log" 2>&1 || { tail "$LOGS/pgbench.log" >&2; die "pgbench -i failed"; }

log "redis: $REDIS_KEYS keys"
python3 - "$REDIS_KEYS" <<'PY' | "${CLI[@]}" --pipe >"$LOGS/redis-load.log" 2>&1 || die "redis-cli --pipe failed"
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
grep -q 'errors: 0' "$LOGS/redis-load.log" || die "redis load had errors (see $LOGS/redis-load.log)"
[[ $("${CLI[@]}" DBSIZE) == "$REDIS_KEYS" ]] || die "redis holds $("${CLI[@]}" DBSIZE) keys, expected $REDIS_KEYS"

log "influxdb: $INFLUX_POINTS points"
iq "CREATE DATABASE metrics" >/dev/null
python3 - "$INFLUX_POINTS" "$INFLUX_URL" <<'PY' || die "writing the InfluxDB points failed"
import gzip, sys, urllib.request
n, url = int(sys.argv[1]), sys.argv[2]
base, batch = 1_600_000_000_000_000_000, 200_000
for start in range(0, n, batch):
    lines = []
    for i in range(start, min(n, start + batch)):
        if i % 100 == 99:  # 1 %: a second measurement with a string field
            lines.append('status,site=s%d state="st%d",code=%di %d'
                         % (i % 100, i % 7, i % 500, base + i * 1_000_000))
        else:
            lines.append("meter,site=s%d,phase=L%d watts=%r,count=%di,ok=%s %d"
                         % (i % 100, i % 3, i * 0.25, i, "true" if i % 2 else "false", base + i * 1_000_000))
    body = gzip.compress(("\n".join(lines) + "\n").encode(), 1)
    req = urllib.request.Request(url + "/write?db=metrics&precision=ns", data=body,
                                 headers={"Content-Encoding": "gzip"})
    urllib.request.urlopen(req).read()
PY

log "files: gen-tree.py $FILES_MIB MiB (seed $SEED)"
python3 "$SCRIPT_DIR/gen-tree.py" "$APP.tmp" "$FILES_MIB" "$SEED" >"$LOGS/gen-tree.log" 2>&1 \
    || { tail "$LOGS/gen-tree.log" >&2; die "gen-tree.py failed"; }
mv "$APP.tmp" "$APP"

# ----------------------------------------------------------- fingerprints --
pg_fp() { # a digest of the plain dump (\restrict lines carry a random key)
    [[ $("$PGBIN/psql" -XAtc "SELECT 1 FROM pg_database WHERE datname = 'bench'" postgres) == 1 ]] \
        || { echo absent; return 0; }
    "$PGBIN/pg_dump" --format=plain --no-owner -d bench 2>>"$LOGS/pg_dump.err" | grep -v -e '^\\restrict ' -e '^\\unrestrict ' | sha256sum | cut -c1-64
}
redis_fp() { echo "$("${CLI[@]}" DBSIZE) $("${CLI[@]}" DEBUG DIGEST)"; }
influx_counts() { # count(*) of every field of every measurement
    iq 'SELECT count(*) FROM /.*/' metrics | python3 -c '
import json, sys
r = json.load(sys.stdin)["results"][0]
print(" ".join("%s:%s" % (s["name"], ",".join(str(v) for v in s["values"][0][1:])) for s in r.get("series", [])))'
}
influx_fp() { # counts, plus the digest of a chunked SELECT * answer
    local d
    d=$(curl -sf -XPOST "$INFLUX_URL/query" --data-urlencode 'q=SELECT * FROM /.*/' -d db=metrics \
        -d epoch=ns -d chunked=true -d chunk_size=10000 | sha256sum | cut -c1-64) || die "influx SELECT * failed"
    echo "$(influx_counts) $d"
}
# Every entry with type, mode, owner, size, mtime, link target and content
# hash (crates/testing/src/servers/docker_objects.rs's listing).
vol_fp() {
    # (`docker run -v` would create a missing volume)
    docker volume inspect "$1" >/dev/null 2>&1 || { echo absent; return 0; }
    docker run --rm -v "$1:/v:ro" "$BUSYBOX" sh -c \
        'cd /v && find . | sort | while read -r p; do
           s=$(stat -c "%F %a %u:%g %s" "$p");
           if [ -L "$p" ]; then s="$s -> $(readlink "$p")";
           elif [ -f "$p" ]; then s="$s links=$(stat -c %h "$p") $(stat -c %Y "$p") $(sha256sum < "$p" | cut -c1-16)";
           elif [ -d "$p" ]; then s="$s $(stat -c %Y "$p")"; fi;
           echo "$p $s"; done' | sha256sum | cut -c1-64
}
files_fp() { # type, mode, size, mtime (ns) and path of every entry, sha256 of every file
    (cd "$APP" && {
        find . -mindepth 1 -printf '%y %m %s %T@ %p\n' | LC_ALL=C sort
        find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
    }) | sha256sum | cut -c1-64
}
SOURCES=(db cache metrics vols files)
declare -A BEFORE=() DAMAGED=() AFTER=()
fingerprint_all() { # ARRAY_NAME
    local -n fp=$1
    fp[db]=$(pg_fp || echo unavailable)
    fp[cache]=$(redis_fp || echo unavailable)
    fp[metrics]=$(influx_fp || echo unavailable)
    fp[vols]="$(vol_fp "$VOL1" || echo unavailable) $(vol_fp "$VOL2" || echo unavailable)"
    fp[files]=$(files_fp || echo unavailable)
}
log "fingerprints before the backup"
fingerprint_all BEFORE
PG_BYTES=$("$PGBIN/psql" -XAtc "SELECT pg_database_size('bench')" bench)
FILES_BYTES=$(find "$APP" -type f -printf '%s\n' | awk '{s+=$1} END {printf "%d", s}')

# ----------------------------------------------------------------- config --
PSQL_CHECK="$PGBIN/psql -X -h 127.0.0.1 -p $PG_PORT -U postgres -d bench -Atc 'SELECT count(*) FROM pgbench_branches' | grep -qx $PG_SCALE"
cat >"$BENCH_DIR/backup.toml" <<TOML
[repository]
url = "$BENCH_DIR/repo"

[sources.db]
type = "postgres"
url = "$PG_URL"
bin_dir = "$PGBIN"
[sources.db.restore]
health_command = ["sh", "-c", "$PSQL_CHECK"]

[sources.cache]
type = "redis"
url = "redis://127.0.0.1:$REDIS_PORT"

[sources.metrics]
type = "influxdb"
url = "$INFLUX_URL"
databases = ["metrics"]

[sources.vols]
type = "docker"
volumes = ["$VOL1", "$VOL2"]
helper_image = "$BUSYBOX"
[sources.vols.restore]
stop_containers = ["$WEB"]
health_command = ["sh", "-c", "docker inspect -f '{{.State.Running}}' $WEB | grep -qx true"]

[sources.files]
type = "files"
paths = ["$APP"]
TOML
R=("$RESPALDO" -c "$BENCH_DIR/backup.toml")
"${R[@]}" config check >"$LOGS/config-check.log" 2>&1 || {
    cat "$LOGS/config-check.log" >&2
    die "$RESPALDO rejects the configuration (an older binary without [sources.NAME.restore]? rebuild it: cargo build --release -p respaldo)"
}
"${R[@]}" -q init >"$LOGS/init.log" 2>&1 || { cat "$LOGS/init.log" >&2; die "respaldo init failed"; }

# ------------------------------------------------------------------ timed --
declare -A SEC=() RSS=()
timed() { # STEP CMD...: GNU time; output in logs/STEP.out (stdout) and .err
    local step=$1 rc=0; shift
    log "$step: $*"
    /usr/bin/time -f '%e %M' -o "$LOGS/$step.time" "$@" >"$LOGS/$step.out" 2>"$LOGS/$step.err" || rc=$?
    if ((rc != 0)); then
        tail -n 30 "$LOGS/$step.err" >&2
        die "$step failed (exit $rc; logs: $LOGS/$step.out, $LOGS/$step.err)"
    fi
    read -r SEC[$step] RSS[$step] < <(tail -n1 "$LOGS/$step.time")
    log "$step: ${SEC[$step]} s, peak RSS $((RSS[$step] / 1024)) MiB"
}

timed backup "${R[@]}" --json backup
python3 - "$LOGS/backup.out" <<'PY' || die "a source of the backup is not ok (see $LOGS/backup.out)"
import json, sys
b = json.load(open(sys.argv[1]))
bad = {k: v.get("status") for k, v in b["sources"].items() if v.get("status") != "ok"}
sys.exit(1 if bad else 0)
PY
REPO_BYTES=$(du -sb "$BENCH_DIR/repo" | cut -f1)

# ------------------------------------------------------------ the disaster --
log "the disaster: database dropped, redis flushed, a bad point, a volume removed, one changed, files damaged"
"$PGBIN/psql" -XAqc "DROP DATABASE bench WITH (FORCE)" postgres
"${CLI[@]}" FLUSHALL >/dev/null
"${CLI[@]}" SET stray x >/dev/null
curl -sf -XPOST "$INFLUX_URL/write?db=metrics&precision=ns" \
    --data-binary 'meter,site=bad,phase=L0 watts=0,count=0i,ok=true 1600000000000000001' || die "influx write failed"
docker volume rm "$VOL2" >/dev/null
vsh "$VOL1" "echo broken > /v/dash/main.json && echo stray > /v/stray.txt && rm -f /v/grafana/small/s1*.txt"
mapfile -t victims < <(cd "$APP" && find . -type f -name '*.rs' | LC_ALL=C sort | head -n 3)
((${#victims[@]} == 3)) || die "the files tree has fewer than 3 .rs files"
echo corrupted >"$APP/${victims[0]}"
rm -f "$APP/${victims[1]}" "$APP/${victims[2]}"
big=$(cd "$APP" && find . -type f -size +1M | LC_ALL=C sort | head -n 1)
[[ -n $big ]] && truncate -s 4096 "$APP/$big"
rm -rf "$(find "$APP/small" -mindepth 1 -maxdepth 1 -type d | LC_ALL=C sort | tail -n 1)"
echo stray >"$APP/stray.txt"

log "fingerprints after the disaster (each must differ, or its check proves nothing)"
fingerprint_all DAMAGED

timed restore "${R[@]}" restore latest --force
log "fingerprints after the restore"
fingerprint_all AFTER
WEB_RUNNING=$(docker inspect -f '{{.State.Running}}' "$WEB" 2>/dev/null || echo missing)

timed test-restore "${R[@]}" --json test-restore
read -r TR_OK TR_RTO_MS < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print("true" if d.get("ok") else "false", d.get("rto_ms", "n/a"))' "$LOGS/test-restore.out") \
    || die "cannot read test-restore's JSON ($LOGS/test-restore.out)"

# ---------------------------------------------------------------- results --
FAILED=0
declare -A CHECK=()
for s in "${SOURCES[@]}"; do
    if [[ ${BEFORE[$s]} == "${DAMAGED[$s]}" ]]; then
        CHECK[$s]="FAIL (the disaster did not change it)"; FAILED=1
    elif [[ ${BEFORE[$s]} == "${AFTER[$s]}" ]]; then
        CHECK[$s]=OK
    else
        CHECK[$s]=FAIL; FAILED=1
    fi
    printf '%s before:   %s\n%s disaster: %s\n%s after:    %s\n' "$s" "${BEFORE[$s]}" \
        "$s" "${DAMAGED[$s]}" "$s" "${AFTER[$s]}" >>"$LOGS/fingerprints.txt"
done
[[ $WEB_RUNNING == true ]] || { CHECK[vols]="FAIL (container $WEB not running after the restore)"; FAILED=1; }
[[ $TR_OK == true ]] || FAILED=1

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
kib_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
PEAK=0
for s in backup restore test-restore; do ((RSS[$s] > PEAK)) && PEAK=${RSS[$s]}; done
RTO_RESULT=$(awk -v s="${SEC[restore]}" -v t="$RTO_TARGET_S" 'BEGIN { print (s <= t) ? "met" : "MISSED" }')
RSS_RESULT=$(awk -v k="$PEAK" -v t="$RSS_TARGET_MIB" 'BEGIN { print (k / 1024 < t) ? "met" : "MISSED" }')
TR_RTO_S=$(awk -v m="$TR_RTO_MS" 'BEGIN { if (m ~ /^[0-9]+$/) printf "%.2f", m / 1000; else print "n/a" }')
HOST_INFO="$(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), $(uname -sr)"
{
    echo "# respaldo whole-stack benchmark — $(date '+%Y-%m-%d %H:%M')"
    echo
    echo "Stack: PostgreSQL 15 pgbench scale $PG_SCALE ($(mib "$PG_BYTES") MiB database), Redis $REDIS_KEYS keys," \
        "InfluxDB 1.x $INFLUX_POINTS points, two Docker volumes of $VOLUME_MIB MiB, files $(mib "$FILES_BYTES") MiB" \
        "(gen-tree.py seed $SEED). Repository after the backup: $(mib "$REPO_BYTES") MiB."
    echo "Host: $HOST_INFO. Binary: $RESPALDO ($("$RESPALDO" --version 2>/dev/null | head -n1))."
    echo
    echo "| step | wall s | peak RSS MiB | target | result |"
    echo "|---|---:|---:|---|---|"
    echo "| respaldo backup | ${SEC[backup]} | $(kib_mib "${RSS[backup]}") | | |"
    echo "| restore latest --force (after the disaster) | ${SEC[restore]} | $(kib_mib "${RSS[restore]}") | | |"
    echo "| test-restore | ${SEC[test-restore]} | $(kib_mib "${RSS[test-restore]}") | | ok=$TR_OK |"
    echo "| **whole-stack RTO (restore latest --force)** | ${SEC[restore]} | | ≤ $RTO_TARGET_S s | $RTO_RESULT |"
    echo "| **peak RSS** (max of the three) | | $(kib_mib "$PEAK") | < $RSS_TARGET_MIB MiB | $RSS_RESULT |"
    echo "| test-restore's reported RTO (rto_ms) | $TR_RTO_S | | | |"
    echo
    echo "| source | identical after the restore |"
    echo "|---|---|"
    echo "| db (postgres, pg_dump digest) | ${CHECK[db]} |"
    echo "| cache (redis, DBSIZE + DEBUG DIGEST) | ${CHECK[cache]} |"
    echo "| metrics (influxdb, count(*) + SELECT * digest) | ${CHECK[metrics]} |"
    echo "| vols (docker, both volumes' listings; container running) | ${CHECK[vols]} |"
    echo "| files (entries, modes, mtimes, sha256) | ${CHECK[files]} |"
    echo
    echo "Peak RSS is GNU time's %M: the largest process of the step (respaldo or a child it waited for, e.g. pg_dump)." \
        "Each step runs once; page cache not dropped."
} >"$BENCH_DIR/results.md"
cat "$BENCH_DIR/results.md"
log "results written to $BENCH_DIR/results.md (logs: $LOGS)"
((FAILED == 0)) || die "a source is not identical after the restore, or test-restore failed (see $LOGS/fingerprints.txt, $LOGS/test-restore.out)"
