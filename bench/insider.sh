#!/usr/bin/env bash
# An insider (a process holding the herd's secret) against a real server holding 20,000 clients, one
# attack at a time (freeze, fill of long ids, fill of short ids, pin, re-greet, the mix): an honest
# client's p99 with the insider paused and while it attacks at full speed (three rounds side by side,
# the median ratio), the server's memory against its byte budget (64 MB), and what the insider got
# back per byte it sent.
#   bench/insider.sh             (loopback only; a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p herd-server --bin herd-server
cargo test --release -q -p herd-tests --test insider figures -- --ignored --nocapture 2>&1 |
  grep -E '^(Freeze|FillLong|FillShort|Pin|Regreet|Mix):'
