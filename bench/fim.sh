#!/usr/bin/env bash
# mamori-fim vs AIDE on the same tree: baseline build (AIDE --init) and check (AIDE --check),
# wall time and peak RSS (GNU time: %e, %M), medians over ROUNDS, warm page cache.
#
#   ROUNDS=3 TREE=/usr bench/fim.sh
#
# AIDE attributes: p+i+n+u+g+s+m+c+l+xattrs+sha256 (permissions, inode, link count, owner,
# group, size, mtime, ctime, symlink target, xattrs, SHA-256; AIDE has no BLAKE3) with
# num_workers = THREADS. mamori-fim records type, size, mode, uid, gid, mtime, ctime, inode,
# dev, xattrs, symlink target and BLAKE3, unthrottled with THREADS walker threads.
#
# "check" is mamori-fim's default check (unchanged files are not read again: the key
# (dev, inode, size, mtime, ctime) is unchanged); "check --paranoid" re-hashes every file like
# AIDE does.
set -euo pipefail

TREE=${TREE:-/usr}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-$(nproc)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}
WORK=$(mktemp -d /var/tmp/fimbench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$(dirname "$0")/.."

if ! command -v aide >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends aide >/dev/null
fi
[ -x /usr/bin/time ] || DEBIAN_FRONTEND=noninteractive apt-get install -y time >/dev/null

nice -n 19 cargo build --release -q -p mamori-fim --example fim_bench
BIN=$CARGO_TARGET_DIR/release/examples/fim_bench

cat >"$WORK/aide.conf" <<EOF
database_in=file:$WORK/aide.db
database_out=file:$WORK/aide.db.new
gzip_dbout=no
report_url=file:$WORK/aide.report
num_workers=$THREADS
FIM = p+i+n+u+g+s+m+c+l+xattrs+sha256
$TREE FIM
EOF

echo "tree: $TREE ($(find "$TREE" -xdev 2>/dev/null | wc -l) entries, $(du -sh -x "$TREE" 2>/dev/null | cut -f1)), rounds: $ROUNDS, threads: $THREADS"
echo "warming the page cache..."
find "$TREE" -xdev -type f -print0 2>/dev/null | xargs -0 cat >/dev/null 2>&1 || true

# measure NAME CMD...: appends "wall rss_kb" to $WORK/NAME.
measure() {
    local name=$1
    shift
    /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || true
    tail -n 1 "$WORK/time" >>"$WORK/$name"
}

for r in $(seq 1 "$ROUNDS"); do
    echo "round $r"
    rm -f "$WORK/aide.db" "$WORK/aide.db.new"
    measure aide_init aide --init --config="$WORK/aide.conf"
    mv "$WORK/aide.db.new" "$WORK/aide.db"
    rm -f "$WORK"/fim.db*
    measure fim_build "$BIN" build "$WORK/fim.db" "$TREE" --threads "$THREADS"
    measure aide_check aide --check --config="$WORK/aide.conf"
    measure fim_check "$BIN" check "$WORK/fim.db" "$TREE" --threads "$THREADS"
    measure fim_check_paranoid "$BIN" check "$WORK/fim.db" "$TREE" --threads "$THREADS" --paranoid
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '\n%-24s %10s %14s\n' "" "wall (s)" "peak RSS (MB)"
for n in aide_init fim_build aide_check fim_check fim_check_paranoid; do
    w=$(cut -d' ' -f1 "$WORK/$n" | median)
    m=$(cut -d' ' -f2 "$WORK/$n" | median)
    printf '%-24s %10s %14s\n' "$n" "$w" "$(awk -v k="$m" 'BEGIN {printf "%.1f", k/1024}')"
done
echo
echo "mamori-fim build:  $(cat "$WORK/fim_build.out")"
echo "mamori-fim check:  $(cat "$WORK/fim_check.out")"
echo "aide check report: $(grep -m1 -E 'found NO differences|found differences' "$WORK/aide.report" || true)"
