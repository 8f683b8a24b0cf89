#!/usr/bin/env bash
# The cost of counting for the admin endpoint (issue: "counting must not cost the IAMAT path more than
# 3 %"): a lone server of this tree against one built from BASE (a commit before the counters, default
# required), IAMAT load, 50 connections, pipeline 1 and 16, both runtime shapes, rounds interleaved
# (base, this, base, this, …) so drift hits both alike. Prints each round and the ratio of medians.
# The cost is 1 - with/base, in per cent (negative: the tree with counters was faster, i.e. noise).
#   BASE=<commit> ROUNDS=3 DURATION=5 bench/admin.sh
source "$(dirname "$0")/common.sh"
ROUNDS="${ROUNDS:-3}"
if [ -n "${BASE_BIN:-}" ]; then
  # A base binary built earlier (for re-runs): BASE_BIN=/path/to/herd-server bench/admin.sh
  cp "$BASE_BIN" "$WORK/herd-server-base"
else
  BASE="${BASE:?set BASE to a commit without the admin counters (the parent of the commit that added admin.rs), or BASE_BIN to its herd-server}"
  # The base, built in a worktree of its own (under the temporary folder, removed on exit) with this
  # tree's target folder, so the dependencies are shared and no second target folder fills the disk.
  git -C "$ROOT" worktree add -q --detach "$WORK/base" "$BASE"
  trap 'git -C "$ROOT" worktree remove --force "$WORK/base" 2>/dev/null || true; git -C "$ROOT" worktree prune; cleanup' EXIT
  (cd "$WORK/base" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release -q -p herd-server --bins)
  cp "$ROOT/target/release/herd-server" "$WORK/herd-server-base"
fi
build
if cmp -s "$WORK/herd-server-base" "$BIN/herd-server"; then
  echo "the base and this tree's herd-server are the same binary: nothing to compare" >&2
  exit 1
fi
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
    cost=$(python3 -c 'import sys; b,t=float(sys.argv[1]),float(sys.argv[2]); print(f"{(1-t/b)*100:+.1f} %")' "$mb" "$mt")
    printf '%-12s P%-2s base %8.0f req/s  with counters %8.0f req/s  ratio %s  cost %s\n' "${shape:-multi-thread}" "$P" "$mb" "$mt" "$(ratio "$mt" "$mb")" "$cost"
  done
  kill "${PIDS[-1]}" "${PIDS[-2]}" 2>/dev/null || true
done
