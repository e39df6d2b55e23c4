#!/usr/bin/env bash
# Agent idle cost: a manager and an enrolled agent as separate processes on loopback, the
# default policy with file integrity monitoring on (default paths, real-time watcher, on-write
# scanning), nothing happening. After the baseline is built, the agent's CPU time (utime +
# stime from /proc) and RSS are sampled for DURATION seconds (default 600).
#
#   bench/agent-idle.sh            DURATION=120 bench/agent-idle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-600}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}"
cargo build --release -q -p mamori
bin=$CARGO_TARGET_DIR/release/mamori
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" server --data "$work/m" --listen "127.0.0.1:$port" >"$work/server.log" 2>&1 &
for _ in $(seq 100); do [ -f "$work/m/manager.json" ] && break; sleep 0.1; done
fp=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ca_fingerprint"])' "$work/m/manager.json")
token=$("$bin" token create --json --data "$work/m" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
"$bin" agent enroll --server "https://127.0.0.1:$port" --token "$token" --ca-fingerprint "$fp" --agent-dir "$work/a" >/dev/null
echo '{"heartbeat_secs": 30, "fim": {}}' >"$work/policy.json"
"$bin" policy set "$work/policy.json" --data "$work/m" >/dev/null
"$bin" agent run --agent-dir "$work/a" >"$work/agent.log" 2>&1 &
agent=$!
echo "waiting for the FIM baseline and the ransomware guard..."
for _ in $(seq 600); do
  # Not `| grep -q`: under pipefail, grep exiting early fails the pipeline with SIGPIPE.
  # The baseline, then the ransomware guard's content samples of every watched file.
  out=$("$bin" events tail -n 10 --kind fim.check --json --data "$work/m" 2>/dev/null || true)
  [[ $out == *ransomware_ready* ]] && break
  sleep 1
done
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
start_cpu=$(cpu); start=$(date +%s.%N); max_rss=0
for ((t = 0; t < duration; t += 5)); do
  sleep 5
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$agent/status")
  ((rss > max_rss)) && max_rss=$rss
done
end_cpu=$(cpu); end=$(date +%s.%N)
python3 - "$start_cpu" "$end_cpu" "$start" "$end" "$ticks" "$max_rss" "$agent" <<'PY'
import sys
c0, c1, t0, t1, hz, rss, pid = sys.argv[1:]
cpu = (float(c1) - float(c0)) / float(hz)
wall = float(t1) - float(t0)
hwm = next(l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM"))
print(f"agent idle over {wall:.0f} s: CPU {100 * cpu / wall:.3f} % of one core ({cpu:.2f} s), "
      f"RSS max {int(rss) / 1024:.1f} MiB while idle, peak (incl. baseline) {int(hwm) / 1024:.1f} MiB")
PY
