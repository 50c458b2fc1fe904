#!/usr/bin/env bash
# Benchmark respaldo against restic, borg and tar|zstd on a generated tree.
#
# Usage: bench/bench.sh [SIZE_MIB]        (default 1024)
#
# Environment:
#   RESPALDO        respaldo binary (default: <repo>/target/release/respaldo,
#                   built with `cargo build --release -p respaldo` if missing)
#   BENCH_DIR       work dir (default /tmp/respaldo-bench)
#   BENCH_SEED      generator seed (default 42)
#   BENCH_TOOLS     tools to run, in order (default "respaldo restic borg tar-zstd")
#   BENCH_INSTALL=1 apt-get install restic borgbackup zstd time first
#   BENCH_BORG_ENCRYPTION  borg init --encryption mode (default none)
#   BENCH_KEEP=1    keep each tool's repo/restore dirs after its run
#
# See bench/README.md for what is measured and the caveats.
set -euo pipefail

SIZE_MIB=${1:-1024}
SEED=${BENCH_SEED:-42}
BENCH_DIR=${BENCH_DIR:-/tmp/respaldo-bench}
TOOLS=${BENCH_TOOLS:-"respaldo restic borg tar-zstd"}
BORG_ENC=${BENCH_BORG_ENCRYPTION:-none}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

die() { echo "bench: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

[[ $SIZE_MIB =~ ^[0-9]+$ && $SIZE_MIB -ge 1 ]] || die "SIZE_MIB must be a positive integer, got '$SIZE_MIB'"

# ---------------------------------------------------------------- install --
if [[ ${BENCH_INSTALL:-0} == 1 ]]; then
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO=sudo
    log "installing restic borgbackup zstd time via apt-get"
    $SUDO apt-get update
    $SUDO apt-get install -y restic borgbackup zstd time
fi

# ----------------------------------------------------------------- checks --
[[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time) not found; install package 'time' or set BENCH_INSTALL=1"
command -v python3 >/dev/null || die "python3 not found"
/usr/bin/time -f '%e %M' -o /dev/null true 2>/dev/null || die "/usr/bin/time is not GNU time (needs -f/-o)"

if [[ -z ${RESPALDO:-} ]]; then
    RESPALDO=$REPO_ROOT/target/release/respaldo
    if [[ ! -x $RESPALDO ]]; then
        log "respaldo binary missing; running cargo build --release -p respaldo"
        (cd "$REPO_ROOT" && cargo build --release -p respaldo) || die "cargo build failed"
    fi
fi
[[ -x $RESPALDO ]] || die "respaldo binary not found or not executable: $RESPALDO"
RESPALDO=$(cd "$(dirname "$RESPALDO")" && pwd)/$(basename "$RESPALDO")

# Availability of the comparison tools: missing ones become "n/a" rows.
declare -A MISSING=()
command -v restic >/dev/null || MISSING[restic]="restic not installed"
command -v borg >/dev/null || MISSING[borg]="borg not installed"
command -v zstd >/dev/null || MISSING[tar-zstd]="zstd not installed"
command -v tar >/dev/null || MISSING[tar-zstd]="tar not installed"

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
TREE=$BENCH_DIR/tree
WORK=$BENCH_DIR/work
LOGS=$BENCH_DIR/logs
RESULTS_TSV=$BENCH_DIR/results.tsv
RESULTS_MD=$BENCH_DIR/results.md
SRC_SUMS=$BENCH_DIR/source.sha256
MARKER=BENCH_TREE_MARKER
mkdir -p "$WORK" "$LOGS"

# ------------------------------------------------------------------- tree --
# Generated once per (size, seed, generator version) and reused across runs.
GEN=$SCRIPT_DIR/gen-tree.py
STAMP="size=$SIZE_MIB seed=$SEED gen=$(sha256sum "$GEN" | cut -c1-16)"
if [[ -f $BENCH_DIR/tree.stamp && $(cat "$BENCH_DIR/tree.stamp") == "$STAMP" && -f $TREE/$MARKER && -s $SRC_SUMS ]]; then
    log "reusing tree $TREE ($STAMP)"
else
    log "generating $SIZE_MIB MiB tree in $TREE (seed $SEED)"
    rm -rf "$TREE" "$TREE.tmp" "$BENCH_DIR/tree.stamp" "$SRC_SUMS"
    python3 "$GEN" "$TREE.tmp" "$SIZE_MIB" "$SEED"
    mv "$TREE.tmp" "$TREE"
fi

# sha256 of every regular file, by path relative to the tree root, sorted.
tree_sums() {
    (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
}
# Always recomputed: it also re-reads the whole tree, so every tool starts
# with the same (warm) page cache.
log "checksumming source tree"
tree_sums "$TREE" >"$SRC_SUMS"
echo "$STAMP" >"$BENCH_DIR/tree.stamp"
TREE_BYTES=$(find "$TREE" -type f -printf '%s\n' | awk '{s+=$1} END {printf "%d", s}')
TREE_FILES=$(wc -l <"$SRC_SUMS")
log "tree: $TREE_FILES files, $TREE_BYTES bytes"

# ---------------------------------------------------------------- helpers --
FAIL_REASON=""
T_SEC=""
T_RSS=""

# run_timed TOOL STEP CMD... : runs CMD under GNU time, output to a log.
# Sets T_SEC/T_RSS; on failure sets FAIL_REASON and returns 1.
run_timed() {
    local tool=$1 step=$2
    shift 2
    local tf=$LOGS/$tool.$step.time lf=$LOGS/$tool.$step.log rc=0
    /usr/bin/time -f '%e %M' -o "$tf" "$@" >"$lf" 2>&1 || rc=$?
    if [[ $rc -ne 0 ]]; then
        FAIL_REASON="$step failed (exit $rc): $(grep -v '^[[:space:]]*$' "$lf" | tail -n1 | cut -c1-160) [log: $lf]"
        return 1
    fi
    read -r T_SEC T_RSS < <(tail -n1 "$tf")
    log "  $tool $step: ${T_SEC}s, peak RSS ${T_RSS} KiB"
}

# run_plain TOOL STEP CMD... : untimed setup step with the same error handling.
run_plain() {
    local tool=$1 step=$2
    shift 2
    local lf=$LOGS/$tool.$step.log rc=0
    "$@" >"$lf" 2>&1 || rc=$?
    if [[ $rc -ne 0 ]]; then
        FAIL_REASON="$step failed (exit $rc): $(grep -v '^[[:space:]]*$' "$lf" | tail -n1 | cut -c1-160) [log: $lf]"
        return 1
    fi
}

# Per-tool results (tool -> value).
declare -A R_STATUS=() R_B1=() R_B2=() R_RS=() R_RSS=() R_REPO=() R_VERIFY=()

# max_rss TOOL RSS_KIB: keep the maximum peak RSS over a tool's steps.
max_rss() {
    local cur=${R_RSS[$1]:-0} new=${2%.*}
    if ((new > cur)); then R_RSS[$1]=$new; else R_RSS[$1]=$cur; fi
}

# verify TOOL RESTORE_DIR: locate the tree root via the marker, compare sums.
verify_restore() {
    local tool=$1 out=$2 m root
    m=$(find "$out" -type f -name "$MARKER" -print -quit 2>/dev/null || true)
    if [[ -z $m ]]; then
        R_VERIFY[$tool]="FAIL: $MARKER not found in restore"
        return 0
    fi
    root=$(dirname "$m")
    if tree_sums "$root" >"$LOGS/$tool.restored.sha256" 2>"$LOGS/$tool.verify.log" &&
        cmp -s "$SRC_SUMS" "$LOGS/$tool.restored.sha256"; then
        R_VERIFY[$tool]="ok"
    else
        local nd
        nd=$(diff "$SRC_SUMS" "$LOGS/$tool.restored.sha256" | grep -c '^[<>]' || true)
        R_VERIFY[$tool]="FAIL: $nd differing lines (see $LOGS/$tool.restored.sha256)"
    fi
}

# Each bench_* function runs in a clean dir $D and fills the R_* arrays for
# its tool; on error it sets FAIL_REASON and returns 1.

bench_respaldo() {
    local t=respaldo cfg=$D/respaldo.toml
    cat >"$cfg" <<EOF
[repository]
url = "$D/respaldo-repo"

[sources.data]
type = "files"
paths = ["$TREE"]
EOF
    local -a env=(env "XDG_CACHE_HOME=$D/cache")
    run_plain $t init "${env[@]}" "$RESPALDO" -q -c "$cfg" init || return 1
    run_timed $t backup1 "${env[@]}" "$RESPALDO" -q -c "$cfg" backup || return 1
    R_B1[$t]=$T_SEC; max_rss $t "$T_RSS"
    run_timed $t backup2 "${env[@]}" "$RESPALDO" -q -c "$cfg" backup || return 1
    R_B2[$t]=$T_SEC; max_rss $t "$T_RSS"
    R_REPO[$t]=$(du -sb "$D/respaldo-repo" | cut -f1)
    mkdir "$D/restore"
    run_timed $t restore "${env[@]}" "$RESPALDO" -q -c "$cfg" restore latest --source data --target "$D/restore" || return 1
    R_RS[$t]=$T_SEC; max_rss $t "$T_RSS"
    verify_restore $t "$D/restore"
}

bench_restic() {
    local t=restic
    local -a env=(env RESTIC_PASSWORD=bench "RESTIC_REPOSITORY=$D/repo"
        "RESTIC_CACHE_DIR=$D/cache" "XDG_CACHE_HOME=$D/cache")
    run_plain $t init "${env[@]}" restic init || return 1
    run_timed $t backup1 "${env[@]}" restic backup -q "$TREE" || return 1
    R_B1[$t]=$T_SEC; max_rss $t "$T_RSS"
    run_timed $t backup2 "${env[@]}" restic backup -q "$TREE" || return 1
    R_B2[$t]=$T_SEC; max_rss $t "$T_RSS"
    R_REPO[$t]=$(du -sb "$D/repo" | cut -f1)
    mkdir "$D/restore"
    run_timed $t restore "${env[@]}" restic restore -q latest --target "$D/restore" || return 1
    R_RS[$t]=$T_SEC; max_rss $t "$T_RSS"
    verify_restore $t "$D/restore"
}

bench_borg() {
    local t=borg
    local -a env=(env BORG_PASSPHRASE=bench "BORG_BASE_DIR=$D/base"
        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
        BORG_RELOCATED_REPO_ACCESS_IS_OK=yes)
    run_plain $t init "${env[@]}" borg init --encryption="$BORG_ENC" "$D/repo" || return 1
    run_timed $t backup1 "${env[@]}" borg create --compression zstd,3 "$D/repo::b1" "$TREE" || return 1
    R_B1[$t]=$T_SEC; max_rss $t "$T_RSS"
    run_timed $t backup2 "${env[@]}" borg create --compression zstd,3 "$D/repo::b2" "$TREE" || return 1
    R_B2[$t]=$T_SEC; max_rss $t "$T_RSS"
    R_REPO[$t]=$(du -sb "$D/repo" | cut -f1)
    mkdir "$D/restore"
    # borg extract writes into the current directory.
    run_timed $t restore "${env[@]}" bash -c 'cd "$1" && exec borg extract "$2"' _ "$D/restore" "$D/repo::b2" || return 1
    R_RS[$t]=$T_SEC; max_rss $t "$T_RSS"
    verify_restore $t "$D/restore"
}

bench_tar_zstd() {
    local t=tar-zstd
    mkdir "$D/repo"
    # GNU time reports the max RSS over the pipeline's processes.
    local pack='set -o pipefail; tar -cf - "$1" | zstd -3 -T0 -q > "$2"'
    run_timed $t backup1 bash -c "$pack" _ "$TREE" "$D/repo/b1.tar.zst" || return 1
    R_B1[$t]=$T_SEC; max_rss $t "$T_RSS"
    # No incremental mode: the "re-run" is another full archive.
    run_timed $t backup2 bash -c "$pack" _ "$TREE" "$D/repo/b2.tar.zst" || return 1
    R_B2[$t]=$T_SEC; max_rss $t "$T_RSS"
    R_REPO[$t]=$(du -sb "$D/repo" | cut -f1)
    mkdir "$D/restore"
    run_timed $t restore bash -c 'set -o pipefail; zstd -d -T0 -q < "$1" | tar -xf - -C "$2"' _ "$D/repo/b2.tar.zst" "$D/restore" || return 1
    R_RS[$t]=$T_SEC; max_rss $t "$T_RSS"
    verify_restore $t "$D/restore"
}

tool_version() {
    case $1 in
    respaldo) "$RESPALDO" --version 2>/dev/null | head -n1 || echo "respaldo (version unknown)" ;;
    restic) restic version 2>/dev/null | head -n1 ;;
    borg) borg --version 2>/dev/null | head -n1 ;;
    tar-zstd) echo "$(tar --version 2>/dev/null | head -n1) + $(zstd --version 2>/dev/null | head -n1)" ;;
    esac
}

# -------------------------------------------------------------------- run --
VERSIONS=""
for t in $TOOLS; do
    case $t in respaldo | restic | borg | tar-zstd) ;; *) die "unknown tool '$t' in BENCH_TOOLS" ;; esac
    if [[ -n ${MISSING[$t]:-} ]]; then
        R_STATUS[$t]="n/a: ${MISSING[$t]}"
        log "$t: ${R_STATUS[$t]}"
        continue
    fi
    VERSIONS+="- $t: $(tool_version "$t" || true)"$'\n'
    D=$WORK/$t
    rm -rf "$D"
    mkdir -p "$D"
    rm -f "$LOGS/$t".*
    log "$t: running (logs in $LOGS/$t.*)"
    FAIL_REASON=""
    if "bench_${t//-/_}"; then
        R_STATUS[$t]=ok
        log "$t: verify ${R_VERIFY[$t]}"
    else
        R_STATUS[$t]="n/a: $FAIL_REASON"
        log "$t: ${R_STATUS[$t]}"
        [[ $t == respaldo ]] && die "respaldo failed: $FAIL_REASON"
    fi
    [[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf "$D"
done

# ---------------------------------------------------------------- results --
{
    printf 'tool\tstatus\tb1_s\tb2_s\trestore_s\tpeak_rss_kib\trepo_bytes\tverify\n'
    for t in $TOOLS; do
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "${R_STATUS[$t]:-n/a}" \
            "${R_B1[$t]:-}" "${R_B2[$t]:-}" "${R_RS[$t]:-}" "${R_RSS[$t]:-}" \
            "${R_REPO[$t]:-}" "${R_VERIFY[$t]:-}"
    done
} >"$RESULTS_TSV"

HOST_INFO="$(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), $(uname -sr)"

python3 - "$RESULTS_TSV" "$TREE_BYTES" "$TREE_FILES" "$SIZE_MIB" "$SEED" "$HOST_INFO" "$BORG_ENC" "$VERSIONS" >"$RESULTS_MD" <<'PY'
import csv, sys, datetime

tsv, tree_bytes, tree_files, size_mib, seed, host, borg_enc, versions = sys.argv[1:9]
tree_bytes = int(tree_bytes)
MIB = 1024 * 1024
tree_mib = tree_bytes / MIB

rows = list(csv.DictReader(open(tsv), delimiter="\t"))
by = {r["tool"]: r for r in rows}

def num(r, k):
    try:
        return float(r[k]) if r and r.get(k) else None
    except ValueError:
        return None

def f(x, nd=2):
    return "n/a" if x is None else f"{x:.{nd}f}"

def tput(sec):
    if sec is None:
        return None
    return tree_mib / max(sec, 0.01)  # %e has 10 ms resolution

def clean(s):
    return s.replace("|", "\\|").replace("\n", " ")

names = {"tar-zstd": "tar \\| zstd -3"}
out = []
out.append(f"# respaldo benchmark — {datetime.datetime.now():%Y-%m-%d %H:%M}")
out.append("")
out.append(f"Tree: {tree_files} files, {tree_mib:.1f} MiB (gen-tree.py size {size_mib} MiB, seed {seed}). Host: {host}.")
out.append(f"borg: `--encryption={borg_enc}`, `--compression zstd,3`; restic: repo defaults (encrypted, compression auto).")
out.append("")
out.append("| tool | first backup s | MiB/s | re-run s | restore s | restore MiB/s | peak RSS MiB | repo MiB | restore check |")
out.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
notes = []
for r in rows:
    name = names.get(r["tool"], r["tool"])
    if r["status"] != "ok":
        out.append(f"| {name} | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |")
        notes.append(f"- {name}: {clean(r['status'])}")
        continue
    b1, b2, rs = num(r, "b1_s"), num(r, "b2_s"), num(r, "restore_s")
    rss = num(r, "peak_rss_kib")
    repo = num(r, "repo_bytes")
    out.append(
        f"| {name} | {f(b1)} | {f(tput(b1), 1)} | {f(b2)} | {f(rs)} | {f(tput(rs), 1)} "
        f"| {f(rss / 1024 if rss is not None else None, 1)} | {f(repo / MIB if repo is not None else None, 1)} "
        f"| {clean(r['verify'] or 'n/a')} |"
    )
if notes:
    out.append("")
    out.append("Not measured:")
    out.extend(notes)

def ok(t):
    return t in by and by[t]["status"] == "ok"

def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b

out.append("")
out.append("## Ratios (respaldo vs others)")
out.append("")
rp = by.get("respaldo")
lines = []
def add(label, val, why=""):
    lines.append(f"- {label}: {f(val) + 'x' if val is not None else 'n/a' + (f' ({why})' if why else '')}")

for other, oname in (("restic", "restic"), ("tar-zstd", "tar|zstd"), ("borg", "borg")):
    if ok("respaldo") and ok(other):
        add(f"first-backup throughput, respaldo ÷ {oname}",
            ratio(tput(num(rp, "b1_s")), tput(num(by[other], "b1_s"))))
    else:
        add(f"first-backup throughput, respaldo ÷ {oname}", None, f"{other} not measured")
for other in ("restic", "borg"):
    if ok("respaldo") and ok(other):
        add(f"re-run time, respaldo ÷ {other} (lower is better)",
            ratio(max(num(rp, "b2_s"), 0.01), max(num(by[other], "b2_s"), 0.01)))
        add(f"restore throughput, respaldo ÷ {other}",
            ratio(tput(num(rp, "restore_s")), tput(num(by[other], "restore_s"))))
    else:
        add(f"re-run time / restore throughput vs {other}", None, f"{other} not measured")
if ok("respaldo"):
    rss = num(rp, "peak_rss_kib")
    lines.append(f"- respaldo peak RSS: {f(rss / 1024 if rss else None, 1)} MiB")
    for other in ("restic", "borg"):
        if ok(other):
            lines.append(f"- respaldo repo size ÷ {other}: "
                         f"{f(ratio(num(rp, 'repo_bytes'), num(by[other], 'repo_bytes')))}x")
out.extend(lines)
out.append("")
out.append("Throughput = tree size ÷ wall time. Re-run = second backup of the unchanged tree. "
           "Repo size = `du -sb` after both backups (tar|zstd: two full archives). "
           "Peak RSS = max over backup, re-run and restore. Page cache not dropped (tree is warm).")
out.append("")
out.append("Versions:")
out.append(versions.rstrip("\n") or "- (none)")
print("\n".join(out))
PY

cat "$RESULTS_MD"
log "results written to $RESULTS_MD (raw: $RESULTS_TSV, logs: $LOGS)"
if [[ " $TOOLS " == *" respaldo "* && ${R_VERIFY[respaldo]:-} != ok ]]; then
    die "respaldo restore verification: ${R_VERIFY[respaldo]:-not run}"
fi
