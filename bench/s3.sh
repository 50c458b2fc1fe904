#!/usr/bin/env bash
# Backup to and restore from an S3-compatible server, respaldo beside restic
# in one run: moto's server mode started here, behind a proxy that holds every
# request for a fixed latency (a stand-in for a real object store, where a
# request costs tens of milliseconds) and logs it, so the requests each tool
# makes per restored GiB are counted too.
#
# Usage: bench/s3.sh [SIZE_MIB]            (default 1024)
#
# Environment:
#   BENCH_DIR       work dir (default /tmp/respaldo-bench-s3)
#   BENCH_DELAY_MS  latency per request (default 20)
#   BENCH_RUNS      alternating runs per tool, median reported (default 3)
#   BENCH_SEED      tree generator seed (default 42)
#   RESPALDO        respaldo binary (default: a release build of this checkout)
set -euo pipefail

SIZE_MIB=${1:-1024}
SEED=${BENCH_SEED:-42}
DELAY=${BENCH_DELAY_MS:-20}
RUNS=${BENCH_RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/respaldo-bench-s3}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
log() { echo "bench: $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }

command -v moto_server >/dev/null || die "moto_server not found (pip install 'moto[server]')"
command -v restic >/dev/null || die "restic not found (apt-get install restic)"
[[ -x /usr/bin/time ]] || die "GNU time not found (apt-get install time)"

(cd "$REPO_ROOT" && cargo build -q --release -p respaldo &&
    cargo build -q --release -p respaldo-testing --example latency_proxy)
RESPALDO=${RESPALDO:-$REPO_ROOT/target/release/respaldo}
PROXY_BIN=$REPO_ROOT/target/release/examples/latency_proxy

mkdir -p "$BENCH_DIR"
TREE=$BENCH_DIR/tree
STAMP="size=$SIZE_MIB seed=$SEED gen=$(sha256sum "$SCRIPT_DIR/gen-tree.py" | cut -c1-16)"
if [[ ! -f $BENCH_DIR/tree.stamp || $(cat "$BENCH_DIR/tree.stamp") != "$STAMP" ]]; then
    log "generating a $SIZE_MIB MiB tree"
    rm -rf "$TREE" "$TREE.tmp"
    python3 "$SCRIPT_DIR/gen-tree.py" "$TREE.tmp" "$SIZE_MIB" "$SEED"
    mv "$TREE.tmp" "$TREE"
    echo "$STAMP" >"$BENCH_DIR/tree.stamp"
fi
sums() { (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum); }
sums "$TREE" >"$BENCH_DIR/source.sha256"
TREE_BYTES=$(find "$TREE" -type f -printf '%s\n' | awk '{s+=$1} END {printf "%d", s}')
TREE_FILES=$(wc -l <"$BENCH_DIR/source.sha256")
log "tree: $TREE_FILES files, $TREE_BYTES bytes"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOTO_PORT=$(free_port)
moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$BENCH_DIR/moto.log" 2>&1 &
MOTO_PID=$!
PROXY_LOG=$BENCH_DIR/requests.log
coproc PROXY { "$PROXY_BIN" "$MOTO_PORT" "$DELAY" "$PROXY_LOG"; }
PROXY_PID=$PROXY_PID
trap 'kill $MOTO_PID $PROXY_PID 2>/dev/null || true' EXIT
read -r PROXY_PORT <&"${PROXY[0]}"
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$MOTO_PORT/" && break; sleep 0.1; done
ENDPOINT=http://127.0.0.1:$PROXY_PORT
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1
export RESTIC_PASSWORD=bench

# timed NAME CMD…: runs CMD under GNU time; prints "seconds peak_kib requests".
timed() {
    local name=$1; shift
    local before after
    before=$(wc -l <"$PROXY_LOG")
    /usr/bin/time -f '%e %M' -o "$BENCH_DIR/$name.time" "$@" >"$BENCH_DIR/$name.log" 2>&1 ||
        die "$name failed: $(tail -n3 "$BENCH_DIR/$name.log")"
    after=$(wc -l <"$PROXY_LOG")
    echo "$(tail -n1 "$BENCH_DIR/$name.time") $((after - before))"
}
check() {
    local root
    root=$(dirname "$(find "$1" -name BENCH_TREE_MARKER -print -quit)")
    sums "$root" | cmp -s - "$BENCH_DIR/source.sha256" || die "$2: the restored tree differs"
}

declare -A B=() R=() BQ=() RQ=() RSS=()
add() { B[$1]+="${2} "; BQ[$1]=$3; R[$1]+="${4} "; RQ[$1]=$5; RSS[$1]=$(( ${RSS[$1]:-0} > $6 ? ${RSS[$1]:-0} : $6 )); }
run_respaldo() {
    local n=$1 d=$BENCH_DIR/respaldo
    rm -rf "$d"; mkdir -p "$d"
    curl -s -X PUT -o /dev/null "http://127.0.0.1:$MOTO_PORT/respaldo-$n"
    cat >"$d/backup.toml" <<TOML
[repository]
url = "s3://respaldo-$n/bench"
[repository.s3]
endpoint = "$ENDPOINT"
[sources.data]
type = "files"
paths = ["$TREE"]
TOML
    local -a r=(env "RESPALDO_CACHE_DIR=$d/cache" "$RESPALDO" -q -c "$d/backup.toml")
    "${r[@]}" init >/dev/null
    read -r bs bk bq < <(timed respaldo-backup "${r[@]}" backup)
    rm -rf "$d/cache"   # the disaster case: a new machine
    read -r rs rk rq < <(timed respaldo-restore "${r[@]}" restore latest --source data --target "$d/out")
    check "$d/out" respaldo
    add respaldo "$bs" "$bq" "$rs" "$rq" "$(( bk > rk ? bk : rk ))"
}
run_restic() {
    local n=$1 d=$BENCH_DIR/restic
    rm -rf "$d"; mkdir -p "$d"
    curl -s -X PUT -o /dev/null "http://127.0.0.1:$MOTO_PORT/restic-$n"
    local -a r=(env "RESTIC_CACHE_DIR=$d/cache" restic -q -r "s3:$ENDPOINT/restic-$n/bench")
    "${r[@]}" init >/dev/null
    read -r bs bk bq < <(timed restic-backup "${r[@]}" backup "$TREE")
    rm -rf "$d/cache"
    read -r rs rk rq < <(timed restic-restore "${r[@]}" restore latest --target "$d/out")
    check "$d/out" restic
    add restic "$bs" "$bq" "$rs" "$rq" "$(( bk > rk ? bk : rk ))"
}
for n in $(seq "$RUNS"); do
    log "run $n/$RUNS"
    run_respaldo "$n"
    run_restic "$n"
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
gib=$(awk -v b="$TREE_BYTES" 'BEGIN {print b / 1073741824}')
mbps() { awk -v b="$TREE_BYTES" -v s="$1" 'BEGIN {printf "%.0f", b / 1e6 / s}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
rb=$(echo "${B[respaldo]}" | median); tb=$(echo "${B[restic]}" | median)
rr=$(echo "${R[respaldo]}" | median); tr_=$(echo "${R[restic]}" | median)
cat <<MD
$TREE_FILES files, $(awk -v b="$TREE_BYTES" 'BEGIN {printf "%.0f", b / 1048576}') MiB; moto behind a proxy adding ${DELAY} ms per request; median of $RUNS alternating runs; $(date -u +%Y-%m-%d)

| measure | respaldo | restic | ratio (restic / respaldo time) |
|---|---|---|---|
| backup to S3 (s, MB/s) | $rb ($(mbps "$rb")) | $tb ($(mbps "$tb")) | **$(ratio "$tb" "$rb")** |
| restore from S3, empty cache (s, MB/s) | $rr ($(mbps "$rr")) | $tr_ ($(mbps "$tr_")) | **$(ratio "$tr_" "$rr")** |
| requests, backup | ${BQ[respaldo]} | ${BQ[restic]} | |
| requests per restored GiB | $(awk -v q="${RQ[respaldo]}" -v g="$gib" 'BEGIN {printf "%.0f", q / g}') | $(awk -v q="${RQ[restic]}" -v g="$gib" 'BEGIN {printf "%.0f", q / g}') | |
| peak RSS (MiB) | $(( RSS[respaldo] / 1024 )) | $(( RSS[restic] / 1024 )) | |
MD
