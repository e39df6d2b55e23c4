#!/usr/bin/env bash
# Manager ingest benchmark: N simulated agents, each with its own enrolled key and certificate,
# send event batches over mutual TLS 1.3 on loopback to a manager running as its own process.
# Next to each run: the raw ceiling of batched inserts into the same SQLite schema on the same
# disk (no network, TLS or JSON), measured right after it.
#
#   bench/ingest.sh                        (10, 100 and 1,000 agents; 1,000,000 events each)
#   ROUNDS=3 bench/ingest.sh               (repeat; compare medians by hand)
#   bench/ingest.sh --agents 100 --events 200000
#
# Prints the machine, then a Markdown table per round for BENCHMARKS.md. The run fails if any
# acknowledged event is missing from the manager's database.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-1}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}"
cargo build --release -q -p mamori
bin=$CARGO_TARGET_DIR/release/mamori
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "disk under ${TMPDIR:-/tmp}: $(df -T "${TMPDIR:-/tmp}" | awk 'NR==2 {print $2}')"
echo "mamori $(git rev-parse --short HEAD), $($bin --version)"
for ((r = 1; r <= rounds; r++)); do
  echo
  echo "round $r"
  "$bin" bench ingest "$@"
done
