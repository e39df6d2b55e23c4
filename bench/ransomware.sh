#!/usr/bin/env bash
# Ransomware: files an attacker touched before the agent stopped it, over the simulator's
# styles (in place + rename, write new then delete, partial head, in place), unpaced and at
# 1,000 files/s, on trees of 2,000 files per style. Runs the live test (real agent, real fanotify, real SIGKILL) ROUNDS times and
# prints each round's table and medians. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
[ "$(id -u)" = 0 ] || { echo "bench/ransomware.sh: needs root (fanotify who-data)" >&2; exit 2; }
echo "machine: $(nproc) cores, $(uname -r); commit $(git rev-parse --short HEAD)"
for r in $(seq 1 "$ROUNDS"); do
    echo "--- round $r"
    cargo test --release -q -p mamori-agent --test ransomware simulator_is_stopped_in_every_style \
        -- --nocapture 2>&1 | grep -E "files touched|median"
done
