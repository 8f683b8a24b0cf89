#!/usr/bin/env bash
# An insider (a process holding the herd's secret) against a real server holding 20,000 clients: an
# honest client's p99 idle and while the insider freezes, pins and fills at full speed; the server's
# memory under the flood against its byte budget (64 MB); what a freeze gets sent back.
#   bench/insider.sh             (loopback only; a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p herd-server --bin herd-server
cargo test --release -q -p herd-tests --test insider figures -- --ignored --nocapture 2>&1 |
  grep -E '^(honest|Bravo|freeze)'
