#!/usr/bin/env bash
# Runs `mamori bench KIND ARGS...` ROUNDS times against a release build, after a header naming
# the machine, its load and the commit. bench/ingest.sh and bench/syslog.sh call this.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=$1; shift
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
  "$bin" bench "$kind" "$@"
done
