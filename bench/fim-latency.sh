#!/usr/bin/env bash
# Real-time FIM latency, end to end through the real agent: a manager and an enrolled agent as
# separate processes on loopback (root: fanotify), a policy whose `fim` section watches only a
# fresh directory, and a writer (bench/fim-latency-writer.py) that makes RATE file changes per
# second for DURATION seconds on an absolute schedule: half create new small files, half rewrite
# files that were in the baseline (each of those once per round, so no change of a path is
# coalesced with another of the same path). The time of a change is taken right after its
# close(). The fim.change events are then read from the manager's database (read-only) and
# joined to the writes by file.path: a write is matched by the first event on its path built at
# or after it; latency = the event's @timestamp (the agent's clock, same machine) - write time.
#
#   bench/fim-latency.sh          ROUNDS=3 RATE=1000 DURATION=30 MODES="off on" bench/fim-latency.sh
#   BIN=/path/to/mamori bench/fim-latency.sh     (use a binary built before instead of building)
#
# MODES: the policy's scan_on_write for each run ("off" first, the main figure; "on" also scans
# every new or modified file before the next batch is collected). Ransomware detection stays at
# its default (on). Medians of the per-round percentiles are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "bench/fim-latency.sh must run as root: the agent's real-time watcher needs fanotify (CAP_SYS_ADMIN)" >&2
  exit 1
fi
rounds=${ROUNDS:-3}
rate=${RATE:-1000}
duration=${DURATION:-30}
modes=${MODES:-off on}
if [ -n "${BIN:-}" ]; then
  bin=$BIN # a mamori binary built before (the tree may be mid-edit)
  version="binary $bin"
else
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}"
  nice -n 19 cargo build --release -q -p mamori
  bin=$CARGO_TARGET_DIR/release/mamori
  version="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- crates Cargo.lock 2>/dev/null || echo ' + uncommitted changes')"
fi
helper=bench/fim-latency-writer.py
work=$(mktemp -d /var/tmp/fimlat.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
watched=$work/watched
db=$work/m/manager.db

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r); $version"
echo "rate: $rate changes/s for $duration s, rounds: $rounds, scan_on_write: $modes"
echo "disk: $(python3 "$helper" commits "$work") one-row SQLite commits/s (WAL, synchronous=FULL) in $work;" \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"

# The files the writer modifies, in the baseline before the agent starts.
python3 "$helper" pool "$watched/pool" $(((rate * duration + 1) / 2))

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" server --data "$work/m" --listen "127.0.0.1:$port" >"$work/server.log" 2>&1 &
for _ in $(seq 100); do [ -f "$work/m/manager.json" ] && break; sleep 0.1; done
fp=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ca_fingerprint"])' "$work/m/manager.json")
token=$("$bin" token create --json --data "$work/m" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
"$bin" agent enroll --server "https://127.0.0.1:$port" --token "$token" --ca-fingerprint "$fp" --agent-dir "$work/a" >/dev/null

# set_policy on|off: watch only $watched, no full check during the run, policy picked up within 5 s.
set_policy() {
  local sow=false
  [ "$1" = on ] && sow=true
  printf '{"heartbeat_secs": 5, "fim": {"paths": ["%s"], "check_every_secs": 86400, "scan_on_write": %s}}\n' \
    "$watched" "$sow" >"$work/policy.json"
  "$bin" policy set "$work/policy.json" --data "$work/m" >/dev/null
}
# Workers started so far (one per FIM policy the agent ran).
workers() { grep -c "FIM watcher started" "$work/agent.log" || true; }

first=true
for mode in $modes; do
  set_policy "$mode"
  if $first; then
    "$bin" agent run --agent-dir "$work/a" >"$work/agent.log" 2>&1 &
    echo "waiting for the FIM baseline..."
    for _ in $(seq 300); do
      # Not `| grep -q`: under pipefail, grep exiting early fails the pipeline with SIGPIPE.
      [ -n "$("$bin" events tail -n 1 --kind fim.check --json --data "$work/m" 2>/dev/null)" ] && break
      sleep 1
    done
    first=false
  else
    before=$(workers)
    echo "waiting for the agent to restart FIM with scan_on_write $mode..."
    for _ in $(seq 60); do (($(workers) > before)) && break; sleep 1; done
  fi
  sleep 3
  for r in $(seq 1 "$rounds"); do
    mkdir "$watched/r$mode$r"
    sleep 2 # the directory's own event is out of the way
    echo "scan_on_write $mode, round $r: writing..."
    expected=$(($(python3 "$helper" count "$db") + rate * duration))
    python3 "$helper" write "$watched" "$mode$r" "$rate" "$duration" "$work/writes-$mode$r"
    # Until there is one fim.change per write, or none has arrived for 60 s (then the rest are
    # missed: applying one batch of a backlog can take many seconds, so a short quiet period
    # does not mean the agent is done). At most 10 minutes.
    last=-1 still=0
    for _ in $(seq 600); do
      n=$(python3 "$helper" count "$db")
      ((n >= expected)) && break
      if [ "$n" = "$last" ]; then still=$((still + 1)); else still=0 last=$n; fi
      ((still >= 60)) && break
      sleep 1
    done
    python3 "$helper" analyze "$db" "$work/writes-$mode$r" "scan_on_write $mode" >>"$work/results"
  done
done
python3 "$helper" report "rate $rate/s, $duration s per round" "$work/results"
echo "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "queued: the change waited for the worker to finish the previous batch; in window: in the"
echo "200 ms collection window (COLLECT); after window: applying the batch (stat, hash, baseline"
echo "update) and building the events. Window opening is estimated from the batch's first write."
grep -E "WARN|ERROR" "$work/agent.log" | sort | uniq -c | head -5 || true
