#!/usr/bin/env bash
# PostgreSQL benchmark: respaldo vs pg_dump/pg_restore and restic, same data,
# same run.
#
# Usage: bench/postgres.sh [PGBENCH_SCALE]      (default 50, ~750 MB of data)
#
#   1. backup:  `respaldo backup` wall time vs `pg_dump -Fc -Z0 > /dev/null`
#   2. growth:  after updating 1 % of pgbench_accounts, the second snapshot's
#               repository growth vs restic's for the same two dumps piped
#               through `restic backup --stdin`
#   3. restore: `respaldo restore --target …/copy` vs `pg_restore
#               --single-transaction --exit-on-error` of a local dump file
#   4. peak RSS of respaldo (GNU time)
#
# Environment: RESPALDO (binary; default target/release/respaldo, else
# target/debug/respaldo), BENCH_DIR (default /tmp/respaldo-bench-pg).
# Starts its own PostgreSQL server (trust auth, a free port) and stops it.
set -euo pipefail

SCALE=${1:-50}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/respaldo-bench-pg}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
log() { echo "bench: $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }

RESPALDO=${RESPALDO:-}
if [[ -z $RESPALDO ]]; then
    for c in "$ROOT/target/release/respaldo" "$ROOT/target/debug/respaldo"; do
        [[ -x $c ]] && { RESPALDO=$c; break; }
    done
fi
[[ -x ${RESPALDO:-} ]] || die "build respaldo first (cargo build --release -p respaldo)"
command -v restic >/dev/null || die "restic not installed (apt-get install restic)"
[[ -x /usr/bin/time ]] || die "GNU time not installed (apt-get install time)"
[[ -x $PGBIN/postgres ]] || die "PostgreSQL server not installed"

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"
chmod 777 "$BENCH_DIR"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
AS=()
[[ $(id -u) -eq 0 ]] && AS=(runuser -u postgres --)
"${AS[@]}" "$PGBIN/initdb" -D "$BENCH_DIR/data" -U postgres --auth=trust --no-sync >/dev/null
"${AS[@]}" "$PGBIN/pg_ctl" -D "$BENCH_DIR/data" -l "$BENCH_DIR/pg.log" -w \
    -o "-p $PORT -k $BENCH_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=256MB" start >/dev/null
trap '"${AS[@]}" "$PGBIN/pg_ctl" -D "$BENCH_DIR/data" -m fast stop >/dev/null 2>&1 || true' EXIT
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
URL="postgres://postgres@127.0.0.1:$PORT"

log "pgbench -i -s $SCALE"
"$PGBIN/createdb" bench
"$PGBIN/pgbench" -q -i -s "$SCALE" bench >/dev/null 2>&1
DB_SIZE=$("$PGBIN/psql" -XAtc "SELECT pg_database_size('bench')" bench)

measure() { # label, command… → prints "seconds rss_kib"
    local out=$BENCH_DIR/time.$1; shift
    /usr/bin/time -f '%e %M' -o "$out" "$@" >/dev/null 2>"$BENCH_DIR/stderr.last" || { cat "$BENCH_DIR/stderr.last" >&2; die "$* failed"; }
    cat "$out"
}
size_of() { du -sb "$1" | cut -f1; }

cat >"$BENCH_DIR/backup.toml" <<EOF
[repository]
url = "$BENCH_DIR/repo"

[sources.bench]
type = "postgres"
url = "$URL/bench"
bin_dir = "$PGBIN"
EOF
R=("$RESPALDO" -q -c "$BENCH_DIR/backup.toml")
"${R[@]}" init >/dev/null

median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }
# Wall times on a 2-core VM vary by ±10 % from run to run (page-cache
# writeback, the server's background work): the backup comparison takes the
# median of $RUNS alternating runs of each, every respaldo run into a fresh
# repository (a first backup, like the reference's full dump).
RUNS=${RUNS:-5}
log "pg_dump -Fc -Z0 > /dev/null vs respaldo backup, $RUNS runs each (after a warm-up)"
measure warm sh -c "'$PGBIN/pg_dump' -Fc -Z0 -d bench > /dev/null" >/dev/null
PD=(); RB=()
sed "s|$BENCH_DIR/repo\"|$BENCH_DIR/scratch\"|" "$BENCH_DIR/backup.toml" > "$BENCH_DIR/scratch.toml"
for _ in $(seq "$RUNS"); do
    read -r t _ < <(measure pgdump sh -c "'$PGBIN/pg_dump' -Fc -Z0 -d bench > /dev/null"); PD+=("$t")
    rm -rf "$BENCH_DIR/scratch"; "$RESPALDO" -q -c "$BENCH_DIR/scratch.toml" init >/dev/null
    read -r t _ < <(measure rs "$RESPALDO" -q -c "$BENCH_DIR/scratch.toml" backup); RB+=("$t")
done
rm -rf "$BENCH_DIR/scratch"
PGDUMP_S=$(median "${PD[@]}"); RB_S=$(median "${RB[@]}")
log "pg_dump runs: ${PD[*]}; respaldo runs: ${RB[*]}"
log "respaldo backup (the repository compared with restic below)"
read -r R1_S R1_RSS < <(measure r1 "${R[@]}" backup)
R1_SIZE=$(size_of "$BENCH_DIR/repo")

export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$BENCH_DIR/restic
restic init -q >/dev/null
log "restic backup --stdin"
read -r T1_S _ < <(measure t1 sh -c "'$PGBIN/pg_dump' -Fc -Z0 -d bench | restic backup -q --stdin --stdin-filename bench.dump")
T1_SIZE=$(size_of "$BENCH_DIR/restic")

log "updating 1 % of pgbench_accounts"
"$PGBIN/psql" -XAqc "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0" bench

read -r R2_S R2_RSS < <(measure r2 "${R[@]}" backup)
R2_GROWTH=$(( $(size_of "$BENCH_DIR/repo") - R1_SIZE ))
read -r T2_S _ < <(measure t2 sh -c "'$PGBIN/pg_dump' -Fc -Z0 -d bench | restic backup -q --stdin --stdin-filename bench.dump")
T2_GROWTH=$(( $(size_of "$BENCH_DIR/restic") - T1_SIZE ))

log "restore: respaldo vs pg_restore of a local file, $RUNS runs each"
"$PGBIN/pg_dump" -Fc -Z0 -d bench -f "$BENCH_DIR/bench.dump"
RR=(); PR=(); RR_RSS=0
for i in $(seq "$RUNS"); do
    read -r t rss < <(measure rr "${R[@]}" restore latest --source bench --target "$URL/copy_respaldo_$i"); RR+=("$t")
    (( rss > RR_RSS )) && RR_RSS=$rss
    # The reference creates its database too, as respaldo's restore does
    # (which also recounts every table's rows afterwards).
    read -r t _ < <(measure pr sh -c "'$PGBIN/createdb' copy_pgrestore_$i && '$PGBIN/pg_restore' --single-transaction --exit-on-error -d copy_pgrestore_$i '$BENCH_DIR/bench.dump'"); PR+=("$t")
    [[ $("$PGBIN/psql" -XAtc "SELECT sum(abalance) FROM pgbench_accounts" "copy_respaldo_$i") == \
       $("$PGBIN/psql" -XAtc "SELECT sum(abalance) FROM pgbench_accounts" bench) ]] || die "restored data differs"
    "$PGBIN/dropdb" "copy_respaldo_$i"; "$PGBIN/dropdb" "copy_pgrestore_$i"
done
log "respaldo restores: ${RR[*]}; pg_restore runs: ${PR[*]}"
RR_S=$(median "${RR[@]}"); PR_S=$(median "${PR[@]}")

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
mib() { python3 -c "print(f'{$1/1048576:.1f}')"; }
cat <<EOF

PostgreSQL benchmark: pgbench scale $SCALE, database $(mib "$DB_SIZE") MiB, $(nproc) cores, respaldo = $RESPALDO

| measure | respaldo | reference | ratio |
|---|---|---|---|
| backup wall time (s, median of $RUNS) vs pg_dump -Fc -Z0 > /dev/null | $RB_S | $PGDUMP_S | $(ratio "$RB_S" "$PGDUMP_S") |
| first backup repository size (MiB) vs restic --stdin | $(mib "$R1_SIZE") | $(mib "$T1_SIZE") | $(ratio "$R1_SIZE" "$T1_SIZE") |
| growth after updating 1 % of rows (MiB) vs restic --stdin | $(mib "$R2_GROWTH") | $(mib "$T2_GROWTH") | $(ratio "$R2_GROWTH" "$T2_GROWTH") |
| second backup wall time (s) vs restic | $R2_S | $T2_S | $(ratio "$R2_S" "$T2_S") |
| restore wall time (s, incl. row-count check, median of $RUNS) vs createdb + pg_restore of a local file | $RR_S | $PR_S | $(ratio "$RR_S" "$PR_S") |
| peak RSS (MiB): backup / restore | $(mib $((R1_RSS * 1024))) / $(mib $((RR_RSS * 1024))) | | |
EOF
