#!/usr/bin/env bash
# Prune after a day-2 forget, respaldo beside restic, on the same data in one
# run: day 1 = the generated benchmark tree, day 2 = bench/day2.py's changes
# (files deleted, middles of large files rewritten, small files rewritten,
# new files); each tool backs up both days, then forgets day 1 and prunes
# (`respaldo forget --prune`, `restic forget --keep-last 1 --prune`). Timed
# with GNU time; bytes freed as each tool reports it and as `du` measures it.
#
# Usage: bench/prune.sh [SIZE_MIB]   (default 1024; RESPALDO, BENCH_DIR, BENCH_SEED as bench.sh)
set -euo pipefail
SIZE_MIB=${1:-1024}
SEED=${BENCH_SEED:-42}
BENCH_DIR=${BENCH_DIR:-/tmp/respaldo-bench}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
RESPALDO=${RESPALDO:-$REPO_ROOT/target/release/respaldo}
die() { echo "prune bench: error: $*" >&2; exit 1; }
log() { echo "prune bench: $*" >&2; }
[[ -x $RESPALDO ]] || (cd "$REPO_ROOT" && cargo build --release -p respaldo) || die "build failed"
command -v restic >/dev/null || die "restic not installed (apt-get install restic)"
[[ -x /usr/bin/time ]] || die "GNU time not installed (apt-get install time)"

mkdir -p "$BENCH_DIR"
TREE=$BENCH_DIR/tree
STAMP="size=$SIZE_MIB seed=$SEED gen=$(sha256sum "$SCRIPT_DIR/gen-tree.py" | cut -c1-16)"
if [[ ! -f $BENCH_DIR/tree.stamp || $(cat "$BENCH_DIR/tree.stamp") != "$STAMP" ]]; then
    log "generating $SIZE_MIB MiB tree"
    rm -rf "$TREE" "$TREE.tmp"
    python3 "$SCRIPT_DIR/gen-tree.py" "$TREE.tmp" "$SIZE_MIB" "$SEED"
    mv "$TREE.tmp" "$TREE"
    echo "$STAMP" >"$BENCH_DIR/tree.stamp"
fi
W=$BENCH_DIR/prune
rm -rf "$W"; mkdir -p "$W"

timed() { # OUT_PREFIX CMD...: runs, saving output and "seconds KiB"
    local out=$1; shift
    /usr/bin/time -f '%e %M' -o "$out.time" "$@" >"$out.log" 2>&1 || { cat "$out.log" >&2; die "$* failed"; }
}

day1() { rm -rf "$W/data"; cp -a "$TREE" "$W/data"; }
day2() { python3 "$SCRIPT_DIR/day2.py" "$W/data" "$SEED"; }

# respaldo
log "respaldo: day 1, day 2"
cat >"$W/respaldo.toml" <<EOT
[repository]
url = "$W/respaldo-repo"
[retention]
keep_last = 1
[sources.data]
type = "files"
paths = ["$W/data"]
EOT
R=("$RESPALDO" -q -c "$W/respaldo.toml")
day1; "${R[@]}" init >/dev/null; "${R[@]}" backup >/dev/null
day2; "${R[@]}" backup >/dev/null
sync
before=$(du -sb "$W/respaldo-repo" | cut -f1)
log "respaldo: forget --prune"
timed "$W/respaldo" "${R[@]}" --json forget --prune
after=$(du -sb "$W/respaldo-repo" | cut -f1)
read -r r_sec r_rss <"$W/respaldo.time"
r_freed=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["bytes_freed"]+d["bytes_incomplete"]-d["bytes_rewritten"])' "$W/respaldo.log")
r_du=$((before - after))
"${R[@]}" verify --read-data >/dev/null || die "respaldo verify failed after prune"

# restic
log "restic: day 1, day 2"
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$W/restic-repo RESTIC_CACHE_DIR=$W/restic-cache
day1; restic init -q; restic backup -q "$W/data"
day2; restic backup -q "$W/data"
sync
before=$(du -sb "$W/restic-repo" | cut -f1)
log "restic: forget --keep-last 1 --prune"
timed "$W/restic" restic forget --keep-last 1 --prune
after=$(du -sb "$W/restic-repo" | cut -f1)
read -r s_sec s_rss <"$W/restic.time"
# restic reports "total prune: N blobs / SIZE" (what it removes).
s_freed=$(grep -E '^total prune:' "$W/restic.log" | head -1 | sed 's/.*\/ *//' || true)
s_du=$((before - after))

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
ratio=$(awk -v a="$r_sec" -v b="$s_sec" 'BEGIN { printf "%.2f", a / b }')
{
    echo "| prune after a day-2 forget ($SIZE_MIB MiB tree) | respaldo | restic |"
    echo "|---|---|---|"
    echo "| time | ${r_sec} s | ${s_sec} s |"
    echo "| time ratio (respaldo / restic) | ${ratio}× | 1× |"
    echo "| peak RSS | $((r_rss / 1024)) MiB | $((s_rss / 1024)) MiB |"
    echo "| freed, as reported | $(mib "$r_freed") | ${s_freed:-n/a} |"
    echo "| freed, by du | $(mib "$r_du") | $(mib "$s_du") |"
} | tee "$W/results.md"
