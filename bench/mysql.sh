#!/usr/bin/env bash
# MariaDB benchmark: respaldo vs mariadb-dump / the mariadb client and
# restic, same data, same run.
#
# Usage: bench/mysql.sh [ROWS]      (default 1000000 rows)
#
# The table is pgbench's `accounts` (as in bench/postgres.sh): FILLER=blank
# (default) leaves its filler column blank as pgbench does; FILLER=md5 fills
# it with hex digests, a dense dump that makes compression the bottleneck.
#
#   1. backup:  `respaldo backup` wall time vs `mariadb-dump --single-transaction
#               … > /dev/null` with the same options respaldo passes
#   2. growth:  after updating 1 % of the rows, the second snapshot's repository
#               growth vs restic's for the same two dumps through
#               `restic backup --stdin`
#   3. restore: `respaldo restore --target …/copy` (which recounts every
#               table's rows) vs `CREATE DATABASE` + `mariadb copy < dump.sql`
#               of a local file
#   4. peak RSS of respaldo (GNU time)
#
# Environment: RESPALDO (binary; default target/release/respaldo, else
# target/debug/respaldo), BENCH_DIR (default /tmp/respaldo-bench-mysql), RUNS.
# Starts its own MariaDB server (a free port, a temp data dir) and stops it.
set -euo pipefail

ROWS=${1:-1000000}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/respaldo-bench-mysql}
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
command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] || die "MariaDB server not installed (apt-get install mariadb-server)"
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/tmp"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
AS_ROOT=()
[[ $(id -u) -eq 0 ]] && AS_ROOT=(--user=root)
mariadb-install-db --no-defaults --datadir="$BENCH_DIR/data" --tmpdir="$BENCH_DIR/tmp" \
    --auth-root-authentication-method=normal --skip-test-db "${AS_ROOT[@]}" >/dev/null 2>&1
"$MARIADBD" --no-defaults --datadir="$BENCH_DIR/data" --tmpdir="$BENCH_DIR/tmp" \
    --socket="$BENCH_DIR/sock" --pid-file="$BENCH_DIR/pid" --log-error="$BENCH_DIR/err.log" \
    --port="$PORT" --bind-address=127.0.0.1 --skip-log-bin --innodb-buffer-pool-size=512M \
    --innodb-log-file-size=256M --innodb-flush-log-at-trx-commit=0 "${AS_ROOT[@]}" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 200); do [[ -S $BENCH_DIR/sock ]] && break; sleep 0.1; done
[[ -S $BENCH_DIR/sock ]] || die "mariadbd did not start: $(tail -5 "$BENCH_DIR/err.log")"
SQL=(mariadb --no-defaults --user=root --host=127.0.0.1 --port="$PORT" --protocol=TCP)
DUMP=(mariadb-dump --no-defaults --user=root --host=127.0.0.1 --port="$PORT" --protocol=TCP
      --single-transaction --quick --routines --triggers --events --hex-blob
      --skip-dump-date --order-by-primary --default-character-set=utf8mb4)

case ${FILLER:-blank} in
    blank) FILL="''" ;;
    md5) FILL="MD5(seq)" ;;
    *) die "FILLER is blank or md5" ;;
esac
log "creating $ROWS rows (filler: ${FILLER:-blank})"
"${SQL[@]}" -e "CREATE DATABASE bench"
"${SQL[@]}" bench -e "CREATE TABLE accounts (aid INT PRIMARY KEY, bid INT NOT NULL, abalance INT NOT NULL, filler CHAR(84)) ENGINE=InnoDB;
  INSERT INTO accounts SELECT seq, 1 + seq DIV 100000, 0, $FILL FROM seq_1_to_$ROWS;
  CREATE TABLE branches (bid INT PRIMARY KEY, bbalance INT, filler CHAR(88));
  INSERT INTO branches SELECT seq, 0, '' FROM seq_1_to_$(( ROWS / 100000 + 1 ));
  ANALYZE TABLE accounts, branches;" >/dev/null
DB_SIZE=$("${SQL[@]}" -N -e "SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'bench'")

measure() { # label, command… → prints "seconds rss_kib"
    local out=$BENCH_DIR/time.$1; shift
    /usr/bin/time -f '%e %M' -o "$out" "$@" >/dev/null 2>"$BENCH_DIR/stderr.last" || { cat "$BENCH_DIR/stderr.last" >&2; die "$* failed"; }
    cat "$out"
}
size_of() { du -sb "$1" | cut -f1; }
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
mib() { python3 -c "print(f'{$1/1048576:.1f}')"; }

cat >"$BENCH_DIR/backup.toml" <<EOF
[repository]
url = "$BENCH_DIR/repo"

[sources.bench]
type = "mysql"
url = "mysql://root@127.0.0.1:$PORT/bench"
EOF
R=("$RESPALDO" -q -c "$BENCH_DIR/backup.toml")
"${R[@]}" init >/dev/null
sed "s|$BENCH_DIR/repo\"|$BENCH_DIR/scratch\"|" "$BENCH_DIR/backup.toml" > "$BENCH_DIR/scratch.toml"

RUNS=${RUNS:-5}
log "mariadb-dump > /dev/null vs respaldo backup, $RUNS alternating runs each (after a warm-up)"
measure warm sh -c "$(printf '%q ' "${DUMP[@]}") bench > /dev/null" >/dev/null
MD=(); RB=(); RB_RSS=0
for _ in $(seq "$RUNS"); do
    read -r t _ < <(measure dump sh -c "$(printf '%q ' "${DUMP[@]}") bench > /dev/null"); MD+=("$t")
    rm -rf "$BENCH_DIR/scratch"; "$RESPALDO" -q -c "$BENCH_DIR/scratch.toml" init >/dev/null
    read -r t rss < <(measure rs "$RESPALDO" -q -c "$BENCH_DIR/scratch.toml" backup); RB+=("$t")
    (( rss > RB_RSS )) && RB_RSS=$rss
done
rm -rf "$BENCH_DIR/scratch"
log "mariadb-dump runs: ${MD[*]}; respaldo runs: ${RB[*]}"
MD_S=$(median "${MD[@]}"); RB_S=$(median "${RB[@]}")

read -r _ _ < <(measure r1 "${R[@]}" backup)
R1_SIZE=$(size_of "$BENCH_DIR/repo")
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$BENCH_DIR/restic
restic init -q >/dev/null
read -r _ _ < <(measure t1 sh -c "$(printf '%q ' "${DUMP[@]}") bench | restic backup -q --stdin --stdin-filename bench.sql")
T1_SIZE=$(size_of "$BENCH_DIR/restic")

log "updating 1 % of the rows"
"${SQL[@]}" bench -e "UPDATE accounts SET abalance = abalance + 1 WHERE aid % 100 = 0"
read -r R2_S _ < <(measure r2 "${R[@]}" backup)
R2_GROWTH=$(( $(size_of "$BENCH_DIR/repo") - R1_SIZE ))
read -r T2_S _ < <(measure t2 sh -c "$(printf '%q ' "${DUMP[@]}") bench | restic backup -q --stdin --stdin-filename bench.sql")
T2_GROWTH=$(( $(size_of "$BENCH_DIR/restic") - T1_SIZE ))

log "restore: respaldo vs the mariadb client reading a local file, $RUNS runs each"
"${DUMP[@]}" bench > "$BENCH_DIR/bench.sql"
WANT=$("${SQL[@]}" -N bench -e "SELECT SUM(abalance), COUNT(*) FROM accounts")
RR=(); MR=(); RR_RSS=0
for i in $(seq "$RUNS"); do
    read -r t rss < <(measure rr "${R[@]}" restore latest --source bench --target "mysql://root@127.0.0.1:$PORT/copy_respaldo_$i"); RR+=("$t")
    (( rss > RR_RSS )) && RR_RSS=$rss
    read -r t _ < <(measure mr sh -c "$(printf '%q ' "${SQL[@]}") -e 'CREATE DATABASE copy_client_$i' && $(printf '%q ' "${SQL[@]}") --binary-mode copy_client_$i < '$BENCH_DIR/bench.sql'"); MR+=("$t")
    [[ $("${SQL[@]}" -N "copy_respaldo_$i" -e "SELECT SUM(abalance), COUNT(*) FROM accounts") == "$WANT" ]] || die "restored data differs"
    "${SQL[@]}" -e "DROP DATABASE copy_respaldo_$i; DROP DATABASE copy_client_$i"
done
log "respaldo restores: ${RR[*]}; mariadb client runs: ${MR[*]}"
RR_S=$(median "${RR[@]}"); MR_S=$(median "${MR[@]}")

cat <<EOF

MariaDB benchmark: $ROWS rows (filler: ${FILLER:-blank}), database $(mib "$DB_SIZE") MiB, dump $(mib "$(size_of "$BENCH_DIR/bench.sql")") MiB, $(nproc) cores, respaldo = $RESPALDO

| measure | respaldo | reference | ratio |
|---|---|---|---|
| backup wall time (s, median of $RUNS) vs mariadb-dump --single-transaction > /dev/null | $RB_S | $MD_S | $(ratio "$RB_S" "$MD_S") |
| first backup repository size (MiB) vs restic --stdin | $(mib "$R1_SIZE") | $(mib "$T1_SIZE") | $(ratio "$R1_SIZE" "$T1_SIZE") |
| growth after updating 1 % of rows (MiB) vs restic --stdin | $(mib "$R2_GROWTH") | $(mib "$T2_GROWTH") | $(ratio "$R2_GROWTH" "$T2_GROWTH") |
| second backup wall time (s) vs restic | $R2_S | $T2_S | $(ratio "$R2_S" "$T2_S") |
| restore wall time (s, incl. row-count check, median of $RUNS) vs CREATE DATABASE + mariadb < dump.sql | $RR_S | $MR_S | $(ratio "$RR_S" "$MR_S") |
| peak RSS (MiB): backup / restore | $(mib $((RB_RSS * 1024))) / $(mib $((RR_RSS * 1024))) | | |
EOF
