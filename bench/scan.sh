#!/usr/bin/env bash
# Side-by-side scanning benchmark: mamori vs yara-x's `yr`, libyara's `yara`, and ClamAV's
# `clamscan` (hash IOCs only), same rules, same hashes, same tree, in one run.
#
#   bench/scan.sh [DIR...]           (default: /usr/lib /usr/bin, copied into one tree)
#   ROUNDS=3 bench/scan.sh           (runs per tool; medians are reported)
#
# Installs the peers it needs (apt: yara clamav time; cargo: yara-x-cli, same yara-x version
# as mamori). Prints a Markdown table for BENCHMARKS.md. The tree is copied to tmpfs so that
# every tool reads from memory: this compares engines, not disks.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
rounds=${ROUNDS:-3}
trees=("$@")
[ ${#trees[@]} -gt 0 ] || trees=(/usr/lib /usr/bin)
corpora=${CORPORA:-$root/../shared/corpora}
rules_dir=$corpora/yara/signature-base/yara
iocs=$corpora/yara/signature-base/iocs/hash-iocs.txt
[ -d "$rules_dir" ] || { echo "bench: $rules_dir is absent: the signature-base rules are needed" >&2; exit 1; }

# --- peers -------------------------------------------------------------------------------
need=()
for p in yara clamav time; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p"); done
if ((${#need[@]})); then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"; fi
yrx_version=$(cargo metadata --format-version 1 --locked 2>/dev/null | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="yara-x"))')
if ! command -v yr >/dev/null || [ "$(yr --version | awk '{print $2}')" != "$yrx_version" ]; then
  cargo install yara-x-cli --version "$yrx_version" --locked
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}"
cargo build --release -p mamori -q
mamori=$CARGO_TARGET_DIR/release/mamori

work=$(mktemp -d /tmp/mamori-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Raw per-run numbers are kept here for inspection after the run.
raw=${RAW:-/tmp/mamori-bench-raw}; mkdir -p "$raw"
mapfile -t rule_files < <(find "$rules_dir" -type f \( -name '*.yar' -o -name '*.yara' \) | sort)
defines=(filename filepath extension filetype owner)

# The same hashes for ClamAV: MD5 in .hdb, SHA-1/SHA-256 in .hsb, size unknown ('*', flevel 73).
grep -v '^#' "$iocs" | awk -F';' -v hdb="$work/iocs.hdb" -v hsb="$work/iocs.hsb" '
  NF && $1 ~ /^[0-9a-fA-F]+$/ { name=$2; gsub(/[^A-Za-z0-9._-]/, "_", name); if (name == "") name = "ioc";
    if (length($1) == 32) print tolower($1) ":*:" name "." NR ":73" > hdb;
    else print tolower($1) ":*:" name "." NR ":73" > hsb }'

# `yr scan` takes one target, so every tool scans one copy of the directories (symlinks kept
# as symlinks). The copy is on tmpfs (TREE_DIR, default /dev/shm), where it stays in memory:
# in the page cache of a disk it would not, as this machine runs a DAMON `pageout` scheme
# (/sys/kernel/mm/damon) that evicts page cache left untouched for about a minute, so each
# tool would find a different part of the tree on disk depending on the tool before it.
tree=$(mktemp -d "${TREE_DIR:-/dev/shm}/mamori-bench-tree.XXXXXX")
trap 'rm -rf "$work" "$tree"' EXIT
echo "bench: copying ${trees[*]} into $tree" >&2
for t in "${trees[@]}"; do cp -a "$t" "$tree/"; done
files=$(find "$tree" -type f | wc -l)
bytes=$(du -sb "$tree" | cut -f1)
archives=$(find "$tree" -type f \( -name '*.zip' -o -name '*.jar' -o -name '*.gz' -o -name '*.tgz' -o -name '*.tar' -o -name '*.whl' \) | wc -l)

# measure NAME CMD...: one timed run, appends "seconds maxrss_kb user_s sys_s" to $work/NAME.
measure() {
  local name=$1; shift
  /usr/bin/time -f "%e %M %U %S" -o "$work/time.tmp" "$@" >/dev/null 2>"$work/$name.err" || true
  cat "$work/time.tmp" >> "$work/$name"
  cp "$work/$name" "$raw/$name"
  echo "bench: $name $(cat "$work/time.tmp")" >&2
}

jobs=$(nproc)
yr_defs=(); yara_defs=()
for d in "${defines[@]}"; do yr_defs+=(--define "$d=\"\""); yara_defs+=(-d "$d="); done
for round in $(seq "$rounds"); do
  echo "bench: round $round/$rounds" >&2
  measure yr yr scan --recursive -p "$jobs" --disable-console-logs "${yr_defs[@]}" "$rules_dir" "$tree"
  measure yr_fast yr scan --fast-scan --recursive -p "$jobs" --disable-console-logs "${yr_defs[@]}" "$rules_dir" "$tree"
  measure yara yara -N -r -p "$jobs" "${yara_defs[@]}" "${rule_files[@]}" "$tree"
  # Both mamori first scans start from an empty data directory: they compile the rules too.
  rm -rf "$work/data"
  measure mamori_noarch env MAMORI_DATA_DIR="$work/data" "$mamori" scan --no-archives --jobs "$jobs" --rules "$rules_dir" "$tree"
  # The usual case: rules were compiled when installed (cached), the tree was never scanned.
  measure mamori_noarch_warm env MAMORI_DATA_DIR="$work/data" "$mamori" scan --no-cache --no-archives --jobs "$jobs" --rules "$rules_dir" "$tree"
  rm -rf "$work/data"
  measure mamori_first env MAMORI_DATA_DIR="$work/data" "$mamori" scan --jobs "$jobs" --rules "$rules_dir" "$tree"
  measure mamori_rescan env MAMORI_DATA_DIR="$work/data" "$mamori" scan --jobs "$jobs" --rules "$rules_dir" "$tree"
  measure clamscan clamscan --no-summary -r -d "$work/iocs.hdb" -d "$work/iocs.hsb" --max-filesize=256M --max-scansize=256M "$tree"
  measure mamori_hashes env MAMORI_DATA_DIR="$work/data" "$mamori" scan --no-cache --jobs "$jobs" --hashes "$work/iocs.hdb" --hashes "$work/iocs.hsb" "$tree"
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
col() { awk -v c="$2" '{print $c}' "$work/$1" | median; }
# CPU (user + sys) next to wall time: with 2 cores, CPU near 2× wall means both were busy to
# the end; much less means one thread finished alone (a large archive scanned last).
cpu() { awk '{print $3 + $4}' "$work/$1" | median; }
row() { printf '| %s | %s | %.2f | %.1f | %d |\n' "$1" "$2" "$(col "$3" 1)" "$(cpu "$3")" "$(( $(col "$3" 2) / 1024 ))"; }
ratio() { python3 -c "print(f'{$(col "$1" 1)/$(col "$2" 1):.2f}')"; }

cat <<MD

Tree: copy of ${trees[*]} — $files files, $((bytes / 1024 / 1024)) MiB, $archives zip/jar/gz/tar files.
The tree is on $(df --output=fstype "$tree" | tail -n 1) ($(dirname "$tree")). Rules: signature-base, ${#rule_files[@]} files. Hashes: signature-base hash-iocs.txt as .hdb/.hsb.
$rounds rounds, medians. Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r).
Versions: mamori $(git rev-parse --short HEAD 2>/dev/null || echo '?') (yara-x $yrx_version), $(yr --version), yara $(yara --version), $(clamscan --version | cut -d/ -f1).

| tool | command | wall s (median) | CPU s (median) | peak RSS MiB |
|---|---|---|---|---|
$(row "yr (yara-x-cli)" "yr scan --recursive -p $jobs" yr)
$(row "yr, fast scan" "yr scan --fast-scan --recursive -p $jobs" yr_fast)
$(row "yara" "yara -N -r -p $jobs" yara)
$(row "mamori, first scan, no archives" "mamori scan --no-archives --rules (empty data dir)" mamori_noarch)
$(row "mamori, first scan, no archives, rules compiled before" "mamori scan --no-cache --no-archives --rules (rules cached)" mamori_noarch_warm)
$(row "mamori, first scan" "mamori scan --rules (empty data dir; looks inside archives)" mamori_first)
$(row "mamori, rescan" "mamori scan --rules (unchanged tree)" mamori_rescan)
$(row "clamscan" "clamscan -r -d iocs.hdb -d iocs.hsb" clamscan)
$(row "mamori, hashes only" "mamori scan --no-cache --hashes iocs.hdb --hashes iocs.hsb" mamori_hashes)

| ratio | value | goal |
|---|---|---|
| mamori first scan, no archives / yr (same work) | $(ratio mamori_noarch yr) | ≤ 0.9 |
| same, rules compiled before / yr | $(ratio mamori_noarch_warm yr) | ≤ 0.9 |
| mamori first scan, no archives / yr --fast-scan | $(ratio mamori_noarch yr_fast) | |
| mamori first scan, no archives / yara | $(ratio mamori_noarch yara) | ≤ 1.0 |
| mamori first scan (with archives) / yr | $(ratio mamori_first yr) | (more work: see text) |
| mamori first scan (with archives) / yara | $(ratio mamori_first yara) | |
| first scan / rescan (speed-up) | $(ratio mamori_first mamori_rescan) | ≥ 20 |
| clamscan / mamori hashes only (speed-up) | $(ratio clamscan mamori_hashes) | ≥ 2 |
| mamori first scan peak RSS / yr peak RSS | $(python3 -c "print(f'{$(col mamori_first 2)/$(col yr 2):.2f}')") | ≤ 1.0 |
| mamori no-archives peak RSS / yr peak RSS | $(python3 -c "print(f'{$(col mamori_noarch 2)/$(col yr 2):.2f}')") | ≤ 1.0 |
MD
