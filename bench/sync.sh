#!/usr/bin/env bash
# Catch-up by difference, measured two ways.
# 1. In one process with no network: two nodes of N clients (1M by default) that differ in d of them
#    (0, 1, 100, 10,000 and N; half of the differing clients newer on each side, and once with one
#    side empty) are linked through the node's own entry points; per case the round trips, the bytes
#    each way, the records each way and the time to `synced`, next to a whole-cache stream both ways.
# 2. Through the real driver: two herd-server processes over loopback holding N clients, the link cut
#    through a proxy while d clients move (half at each side), then healed; per case the time from the
#    heal to equal fingerprints in /status, and the bytes and records that crossed.
#   bench/sync.sh [N [d…]]        (HERD_SYNC_DRIVER=0 skips part 2)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
cargo build --release -q -p herd-server --example sync_bench
"$ROOT/target/release/examples/sync_bench" "$@"
if [ "${HERD_SYNC_DRIVER:-1}" != 0 ]; then
  echo
  echo "Through the driver (two processes over loopback):"
  cargo build --release -q -p herd-server --bin herd-server
  HERD_SYNC_CLIENTS="${1:-1000000}" cargo test --release -q -p herd-tests --test converge -- \
    --ignored --nocapture catch_up_table_through_the_driver 2>&1 | grep -E '^\|'
fi
