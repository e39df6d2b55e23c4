#!/usr/bin/env bash
# Runs the whole test suite. Release mode: YARA-X compiles rules to native code with
# Cranelift, which is too slow unoptimised for the real rule sets the tests load.
# Ends with one total line over all test binaries (cargo's own last line is the doc-tests').
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
awk '/^test result:/ { p += $4; f += $6 } END { printf "total: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
