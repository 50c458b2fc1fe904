#!/usr/bin/env bash
# Scale benchmark (issue: repositories that stay small in memory): builds a
# repository with many small chunks (crates/testing/examples/scale_repo.rs:
# random files backed up with ~256-byte chunks, so the index holds millions
# of entries), then measures peak RSS and wall time of `snapshots`, a backup
# of a small change, a restore of one file and `prune`.
#
#   bench/scale.sh                 # 1 M and 10 M chunks
#   bench/scale.sh 200000          # one size
#   BENCH_RESTIC=1 bench/scale.sh  # also restic on 1 M one-chunk files
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -gt 0 ] && sizes=("$@") || sizes=(1000000 10000000)
work="${BENCH_DIR:-/tmp/respaldo-scale}"
cargo build --release -q -p respaldo
cargo build --release -q -p respaldo-testing --example scale_repo
bin="$PWD/target/release/respaldo"
gen="$PWD/target/release/examples/scale_repo"
results="$work/results.md"
mkdir -p "$work"
measure() { # NAME CMD... → appends "| NAME | MiB | s |"
  local name="$1"; shift
  /usr/bin/time -f "%M %e" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || {
    echo "$name failed:"; cat "$work/err"; exit 1; }
  read -r kb secs <"$work/time"
  printf '| %s | %s | %d MiB | %s s |\n' "$chunks" "$name" $((kb / 1024)) "$secs" | tee -a "$results"
}
echo "| chunks | command | peak RSS | time |" >"$results"
echo "|---|---|---|---|" >>"$results"
for chunks in "${sizes[@]}"; do
  d="$work/$chunks"
  rm -rf "$d" && mkdir -p "$d"
  blobs=$("$gen" "$d/repo" "$d/data" "$chunks")
  echo "repository of $chunks target chunks: $blobs blobs in the index, $(du -sh "$d/repo" | cut -f1)"
  printf '[repository]\nurl = "repo"\n\n[backup]\nhost = "scale"\n\n[sources.data]\ntype = "files"\npaths = ["data"]\n' >"$d/backup.toml"
  cd "$d"
  measure snapshots "$bin" -q snapshots
  head -c 4096 /dev/urandom >>"$d/data/d000/f000000.bin"
  measure "backup (one file changed)" "$bin" -q backup
  measure "restore one file" "$bin" -q restore latest --source data --path data/d000/f000000.bin --target "$d/out"
  cmp "$d/out/data/d000/f000000.bin" "$d/data/d000/f000000.bin"
  measure prune "$bin" -q prune
  cd - >/dev/null
  rm -rf "$d"
done
if [ "${BENCH_RESTIC:-0}" = 1 ] && command -v restic >/dev/null; then
  # restic's chunks are at least 512 KiB: its index reaches 1 M entries
  # with 1 M small files, one blob each.
  d="$work/restic"; rm -rf "$d"; mkdir -p "$d/data"
  python3 - "$d/data" <<'PY'
import os, sys
root = sys.argv[1]
for i in range(1_000_000):
    sub = os.path.join(root, f"d{i % 1000:03}")
    if i < 1000: os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i}"), "wb") as f: f.write(os.urandom(200))
PY
  export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$d/repo"
  restic init -q
  restic backup -q "$d/data" >/dev/null
  chunks=restic-1M
  measure "restic snapshots" restic snapshots -q
  head -c 4096 /dev/urandom >>"$d/data/d000/f0"
  measure "restic backup (one file changed)" restic backup -q "$d/data"
  measure "restic restore one file" restic restore latest --target "$d/out" --include "$d/data/d001/f1"
  measure "restic prune" restic prune -q
  rm -rf "$d"
fi
echo "results: $results"
