#!/usr/bin/env bash
# Syslog ingest benchmark: a manager process receives syslog on loopback while running the
# built-in rule pack; TCP lines/s with every line accounted for (the run fails if one is
# missing from the store), then UDP with what was dropped counted (by the manager and by the
# kernel).
#
#   bench/syslog.sh                          (1,000,000 lines over 4 TCP connections, 200,000 UDP datagrams)
#   ROUNDS=3 bench/syslog.sh                 (repeat; compare medians)
#   bench/syslog.sh --lines 2000000 --connections 1
#
# Prints the machine, then a Markdown table per round for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-1}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mamori-target}"
cargo build --release -q -p mamori
bin=$CARGO_TARGET_DIR/release/mamori
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "disk under ${TMPDIR:-/tmp}: $(df -T "${TMPDIR:-/tmp}" | awk 'NR==2 {print $2}')"
echo "mamori $(git rev-parse --short HEAD), $($bin --version)"
for ((r = 1; r <= rounds; r++)); do
  echo
  echo "round $r"
  "$bin" bench syslog "$@"
done
