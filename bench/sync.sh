#!/usr/bin/env bash
# Catch-up by difference: two nodes of N clients (1M by default) that differ in d of them (0, 1, 100,
# 10,000 and N; half of the differing clients newer on each side, and once with one side empty) are
# linked, in one process with no network; per case the round trips, the bytes each way, the records
# each way and the time to `synced`, next to today's whole-cache stream both ways for the same pair.
#   bench/sync.sh [N [d…]]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
cargo build --release -q -p herd-server --example sync_bench
exec "$ROOT/target/release/examples/sync_bench" "$@"
