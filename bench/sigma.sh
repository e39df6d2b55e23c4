#!/usr/bin/env bash
# Sigma hunt benchmark: `mamori hunt` vs rsigma 0.23.0, same EVTX files, same rules.
#
#   bench/sigma.sh [EVTX_DIR_OR_FILE...]   (default: the hayabusa sample EVTX set)
#   ROUNDS=3 RULES=dir MAMORI=path/to/mamori bench/sigma.sh
#
# How rsigma is run (the fair way we found): rsigma 0.23 can read .evtx itself (`--features
# evtx`, one file per `-e @file`), but it evaluates the nested EVTX JSON
# ({"Event":{"EventData":{..}}}), where SigmaHQ field names (Image, CommandLine, ...) are not
# found without a mapping pipeline, and one process per file would reload the 3,000 rules 593
# times. So both tools get the same events: the EVTX records are converted ONCE, outside the
# timing, by mamori-evtx into flat NDJSON (the field names Sigma rules use), and rsigma reads
# that file with logsource routing on (product/service from `mamori.logsource.*`) and a
# pipeline, generated below from the Sigma taxonomy, that restricts each Windows category to
# its EventIDs (as rsigma's own `sysmon` pipeline does; adding the Channel to the condition
# gave the same detections on the sample set but doubled rsigma's time). The builtin
# `sysmon` pipeline itself is not used: it rewrites every Windows rule to `service: sysmon`,
# which prunes Security/System rules under routing. mamori's time therefore includes decoding EVTX; rsigma's includes
# parsing the NDJSON only. rsigma evaluates on one thread; mamori uses all cores.
#
# Prints a Markdown table (medians of ROUNDS runs: wall time, CPU time, peak RSS, records/s,
# detections), the wall-time ratio, and which rules each tool flagged and where they differ.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
rounds=${ROUNDS:-3}
corpora=${CORPORA:-$root/../shared/corpora}
rules=${RULES:-$corpora/sigma/sigmahq/rules}
inputs=("$@")
[ ${#inputs[@]} -gt 0 ] || inputs=("$corpora/evtx/hayabusa-sample-evtx")
[ -d "$rules" ] || { echo "bench: $rules is absent: the SigmaHQ rules are needed" >&2; exit 1; }
for i in "${inputs[@]}"; do [ -e "$i" ] || { echo "bench: $i is absent" >&2; exit 1; }; done
rsigma_version=0.23.0

# --- tools -------------------------------------------------------------------------------
command -v /usr/bin/time >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q time; }
if ! command -v rsigma >/dev/null || [ "$(rsigma --version | awk '{print $2}')" != "$rsigma_version" ]; then
  # Newer rsigma releases need a newer Rust than the project's.
  cargo install rsigma --version "$rsigma_version" --locked
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}"
if [ -z "${MAMORI:-}" ]; then
  cargo build --release -p mamori -q
  MAMORI=$CARGO_TARGET_DIR/release/mamori
fi
cargo build --release -q -p mamori-evtx --example evtx_to_jsonl
to_jsonl=$CARGO_TARGET_DIR/release/examples/evtx_to_jsonl

work=$(mktemp -d /tmp/mamori-sigma-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
raw=${RAW:-/tmp/mamori-sigma-bench-raw}; mkdir -p "$raw"

# --- the same events for rsigma, converted once (not timed) -----------------------------
echo "bench: converting ${inputs[*]} to NDJSON for rsigma" >&2
"$to_jsonl" "${inputs[@]}" >"$work/events.ndjson" 2>"$work/convert.err"
tail -n 1 "$work/convert.err" >&2

# Windows categories → EventIDs from the Sigma taxonomy appendix, as rsigma add_condition
# transformations (rule field names are already the events' names).
python3 - "$work/windows.yml" <<'PY'
import sys
categories = {  # Sysmon (Microsoft-Windows-Sysmon/Operational)
    "process_creation": [1], "file_change": [2], "network_connection": [3], "sysmon_status": [4, 16],
    "process_termination": [5], "driver_load": [6], "image_load": [7], "create_remote_thread": [8],
    "raw_access_thread": [9], "process_access": [10], "file_event": [11], "registry_event": [12, 13, 14],
    "registry_add": [12], "registry_delete": [12], "registry_set": [13], "registry_rename": [14],
    "create_stream_hash": [15], "pipe_created": [17, 18], "wmi_event": [19, 20, 21], "dns_query": [22],
    "file_delete": [23], "clipboard_capture": [24], "process_tampering": [25], "file_delete_detected": [26],
    "file_block_executable": [27], "file_block_shredding": [28], "file_executable_detected": [29],
    "sysmon_error": [255],
}
categories.update({  # Windows PowerShell; Microsoft-Windows-PowerShell/Operational
    "ps_classic_start": [400], "ps_classic_provider_start": [600], "ps_classic_script": [800],
    "ps_module": [4103], "ps_script": [4104],
})
out = ["name: windows-taxonomy-categories", "priority: 10", "transformations:"]
def emit(category, ids):
    out.append(f"  - id: category_{category}")
    out.append("    type: add_condition")
    out.append("    conditions:")
    out.append("      EventID: [" + ", ".join(str(i) for i in ids) + "]")
    out.append("    rule_conditions:")
    out.append("      - type: logsource")
    out.append(f"        category: {category}")
    out.append("        product: windows")
for category, ids in categories.items():
    emit(category, ids)
open(sys.argv[1], "w").write("\n".join(out) + "\n")
PY
cp "$work/windows.yml" "$raw/rsigma-windows-pipeline.yml"

# Warm the page cache for both.
find "${inputs[@]}" -type f -print0 | xargs -0 cat >/dev/null
cat "$work/events.ndjson" >/dev/null

# measure NAME OUT CMD...: one timed run (stdout to OUT), appends "wall cpu maxrss_kb" to
# $work/NAME.times; stderr kept in OUT.err. `mamori hunt` exits 1 when it detected something
# and 2 when an input could not be read in full (the corpus has damaged files); both are runs.
measure() {
  local name=$1 out=$2 code=0; shift 2
  /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$@" >"$out" 2>"$out.err" || code=$?
  if [ "$code" -ne 0 ] && ! { [ "$name" = mamori ] && [ "$code" -le 2 ]; }; then
    echo "bench: $name failed (exit $code); see $out.err" >&2; tail -n 5 "$out.err" >&2; exit 1
  fi
  # GNU time puts "Command exited with non-zero status N" before the numbers.
  tail -n 1 "$work/time" | awk '{printf "%s %.2f %s\n", $1, $2 + $3, $4}' >>"$work/$name.times"
}

for ((r = 1; r <= rounds; r++)); do
  echo "bench: round $r/$rounds" >&2
  measure mamori "$raw/mamori.json" "$MAMORI" hunt --rules "$rules" --json "${inputs[@]}"
  measure rsigma "$raw/rsigma.ndjson" rsigma engine eval -r "$rules" -p "$work/windows.yml" \
    --logsource-routing \
    --logsource-field-map 'product=mamori.logsource.product,service=mamori.logsource.service,category=mamori.logsource.category' \
    -e "@$work/events.ndjson" --output-format ndjson
done
cp "$work"/*.times "$raw/"

# --- report ------------------------------------------------------------------------------
python3 - "$work" "$raw" "$rounds" <<'PY'
import collections, json, re, statistics, sys
work, raw, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])

def medians(name):
    rows = [list(map(float, line.split())) for line in open(f"{work}/{name}.times")]
    return [statistics.median(col) for col in zip(*rows)]

# mamori: one JSON object per detection, then the summary object.
mamori_rules, mamori_titles, summary, correlations = collections.Counter(), {}, None, 0
for line in open(f"{raw}/mamori.json"):
    obj = json.loads(line)
    if obj.get("type") == "summary":
        summary = obj
    elif obj.get("rule", {}).get("kind") == "correlation":
        correlations += 1
    else:
        rule = obj["rule"]
        key = rule.get("id") or rule["title"]
        mamori_rules[key] += 1
        mamori_titles[key] = rule["title"]
records = summary["input"]["records"] if summary else 0

rsigma_rules, rsigma_titles = collections.Counter(), {}
for line in open(f"{raw}/rsigma.ndjson"):
    obj = json.loads(line)
    key = obj.get("rule_id") or obj["rule_title"]
    rsigma_rules[key] += 1
    rsigma_titles[key] = obj["rule_title"]
processed = re.search(r"Processed (\d+) events", open(f"{raw}/rsigma.ndjson.err").read())
rsigma_records = int(processed.group(1)) if processed else records

m_wall, m_cpu, m_rss = medians("mamori")
r_wall, r_cpu, r_rss = medians("rsigma")
print(f"Sigma hunt: {records} EVTX records, {summary['rules']['loaded'] if summary else '?'} rules loaded by mamori, "
      f"medians of {rounds} rounds\n")
print("| tool | input | wall s | CPU s | peak RSS MiB | records/s | detections | rules flagged |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
print(f"| mamori hunt | .evtx (decoded in the run) | {m_wall:.2f} | {m_cpu:.2f} | {m_rss/1024:.0f} | "
      f"{records/m_wall:,.0f} | {sum(mamori_rules.values())} (+{correlations} correlations) | {len(mamori_rules)} |")
print(f"| rsigma {'0.23.0'} | same events as NDJSON (converted before) | {r_wall:.2f} | {r_cpu:.2f} | {r_rss/1024:.0f} | "
      f"{rsigma_records/r_wall:,.0f} | {sum(rsigma_rules.values())} | {len(rsigma_rules)} |")
print(f"\nwall-time ratio rsigma / mamori: {r_wall/m_wall:.2f}x (CPU-time ratio {r_cpu/m_cpu:.2f}x)")
if summary:
    run_s = summary["elapsed_ms"] / 1000
    print(f"mamori without loading the rules (its summary, last round): {run_s:.2f} s, "
          f"{records/run_s:,.0f} records/s")
print()

for name, counts, titles in (("mamori", mamori_rules, mamori_titles), ("rsigma", rsigma_rules, rsigma_titles)):
    with open(f"{raw}/{name}-rules.txt", "w") as listing:
        for k, n in counts.most_common():
            listing.write(f"{n:6}  {titles[k]}  [{k}]\n")
print(f"every rule each tool flagged, with counts: {raw}/mamori-rules.txt, {raw}/rsigma-rules.txt\n")

only_m = sorted(set(mamori_rules) - set(rsigma_rules), key=lambda k: -mamori_rules[k])
only_r = sorted(set(rsigma_rules) - set(mamori_rules), key=lambda k: -rsigma_rules[k])
both = set(mamori_rules) & set(rsigma_rules)
differ = sorted((k for k in both if mamori_rules[k] != rsigma_rules[k]), key=lambda k: -abs(mamori_rules[k] - rsigma_rules[k]))
print(f"rules flagged by both: {len(both)} ({len(both) - len(differ)} with the same count)")
print(f"\nflagged by mamori only ({len(only_m)}):")
for k in only_m: print(f"  {mamori_rules[k]:6}  {mamori_titles[k]}  [{k}]")
print(f"\nflagged by rsigma only ({len(only_r)}):")
for k in only_r: print(f"  {rsigma_rules[k]:6}  {rsigma_titles[k]}  [{k}]")
print(f"\nflagged by both, different counts ({len(differ)}; mamori / rsigma):")
for k in differ: print(f"  {mamori_rules[k]:6} / {rsigma_rules[k]:<6}  {mamori_titles[k]}  [{k}]")
PY
echo "bench: raw outputs in $raw" >&2
