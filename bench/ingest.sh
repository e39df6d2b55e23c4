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
exec "$(dirname "$0")/manager-bench.sh" ingest "$@"
