#!/usr/bin/env bash
# The journal against an embedded store (redb) on the server's own work: a million appends in batches of
# 16 with one sync at the end, batches made durable one by one from 8 threads (fsync "always"), the load of
# every record into a node (as at start), and bytes on disk per record. The comparison lives in its own
# crate (bench/embedded, outside the workspace) so that redb is never built by the tests or CI.
#   bench/embedded.sh            (RECORDS=1000000, BATCHES=200 per thread, THREADS=8)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d -t herd-embedded.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
(cd "$ROOT/bench/embedded" && cargo build --release -q)
"$CARGO_TARGET_DIR/release/herd-bench-embedded" "$WORK" "${RECORDS:-1000000}" "${BATCHES:-200}" "${THREADS:-8}"
