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
exec "$(dirname "$0")/manager-bench.sh" syslog "$@"
