#!/usr/bin/env bash
# Convergence under chaos, on real processes (release build), three linked servers with data dirs
# under `fsync = "always"`.
# 1. Many seeds of the chaos schedule of tests/tests/chaos.rs (kill -9, whole-herd kills, cut links,
#    SIGSTOP under a flood): every acknowledged record must be on every server afterwards.
# 2. Whole-herd kill -9 rounds with CLIENTS clients held: acknowledged records missing anywhere after
#    the heal (goal 0), and the time from the last restart to equal fingerprints everywhere.
#   bench/chaos.sh [SEEDS [ROUNDS [CLIENTS]]]     (defaults: 10 seeds, 20 rounds, 100,000 clients)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
SEEDS="${1:-10}"; ROUNDS="${2:-20}"; CLIENTS="${3:-100000}"
cargo build --release -q -p herd-server --bin herd-server
for seed in $(seq 1 "$SEEDS"); do
  HERD_CHAOS_SEED="$seed" HERD_CHAOS_EVENTS=12 cargo test --release -q -p herd-tests --test chaos -- \
    --nocapture every_acknowledged_record 2>&1 | grep -E '^seed|panicked|lacks' || true
done
HERD_CHAOS_ROUNDS="$ROUNDS" HERD_CHAOS_CLIENTS="$CLIENTS" cargo test --release -q -p herd-tests \
  --test chaos -- --ignored --nocapture whole_herd_kill9_rounds 2>&1 | grep -E '^round|rounds,|panicked|lacks'
