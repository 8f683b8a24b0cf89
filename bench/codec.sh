#!/usr/bin/env bash
# Target 7: the codec beside its floor (criterion). Full report in target/criterion.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p herd-proto --features codec --bench codec -- --warm-up-time 1 --measurement-time 3 2>&1 | grep -E '^(line|stream)|time:|thrpt:'
