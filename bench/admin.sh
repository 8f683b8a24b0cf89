#!/usr/bin/env bash
# The cost of counting for the admin endpoint (issue: "counting must not cost the IAMAT path more than
# 3 %"): a lone server of this tree against one built from BASE (a commit before the counters, default
# required), IAMAT load, 50 connections, pipeline 1 and 16, both runtime shapes, rounds interleaved
# (base, this, base, this, …) so drift hits both alike. Prints each round and the ratio of medians.
#   BASE=<commit> ROUNDS=3 DURATION=5 bench/admin.sh
source "$(dirname "$0")/common.sh"
BASE="${BASE:?set BASE to a commit without the admin counters (the parent of the commit that added admin.rs)}"
ROUNDS="${ROUNDS:-3}"
# The base, built in a worktree of its own with this tree's target folder (dependencies are shared).
git -C "$ROOT" worktree add -q --detach "$WORK/base" "$BASE"
trap 'git -C "$ROOT" worktree remove --force "$WORK/base" 2>/dev/null || true; cleanup' EXIT
(cd "$WORK/base" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release -q -p herd-server --bins)
cp "$ROOT/target/release/herd-server" "$WORK/herd-server-base"
build
# server BINARY PORT [args…]: a lone server, line logging off.
server() {
  local bin=$1 port=$2; shift 2
  printf '[log]\nlines = false\n[[server]]\nname = "Alford"\nlisten = "127.0.0.1:%s"\n' "$port" > "$WORK/s-$port.toml"
  "$bin" serve Alford --config "$WORK/s-$port.toml" --log-dir "$WORK/logs" "$@" 2>/dev/null &
  PIDS+=($!)
  wait_port "$port"
}
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
for shape in "" "--threads 1"; do
  B=$(free_port); T=$(free_port)
  # shellcheck disable=SC2086
  server "$WORK/herd-server-base" "$B" $shape
  # shellcheck disable=SC2086
  server "$BIN/herd-server" "$T" $shape
  for P in 1 16; do
    base=(); this=()
    for r in $(seq 1 "$ROUNDS"); do
      b=$(field "$(bench "$B" -c 50 -P "$P" --clients 1000000)" requests_per_sec)
      t=$(field "$(bench "$T" -c 50 -P "$P" --clients 1000000)" requests_per_sec)
      base+=("$b"); this+=("$t")
      printf '  %s P%s round %s: base %.0f req/s, with counters %.0f req/s\n' "${shape:-multi-thread}" "$P" "$r" "$b" "$t" >&2
    done
    mb=$(median "${base[@]}"); mt=$(median "${this[@]}")
    printf '%-12s P%-2s base %8.0f req/s  with counters %8.0f req/s  ratio %s\n' "${shape:-multi-thread}" "$P" "$mb" "$mt" "$(ratio "$mt" "$mb")"
  done
  kill "${PIDS[-1]}" "${PIDS[-2]}" 2>/dev/null || true
done
