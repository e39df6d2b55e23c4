#!/usr/bin/env bash
# Runs the whole test suite. Release mode: YARA-X compiles rules to native code with
# Cranelift, which is too slow unoptimised for the real rule sets the tests load.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --release --workspace "$@"
