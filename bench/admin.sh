#!/usr/bin/env bash
# The cost of counting for the admin endpoint (issue: "counting must not cost the IAMAT path more than
# 3 %"): a lone server of this tree against one built from BASE (a commit before the counters, default
# required), IAMAT load, 50 connections, pipeline 1 and 16, both runtime shapes, rounds interleaved
# (base, this, base, this, …) so drift hits both alike. Prints each round and the ratio of medians.
# The cost is 1 - with/base, in per cent (negative: the tree with counters was faster, i.e. noise).
# Beside req/s it prints the server's CPU time per request (all its threads, from /proc schedstat), which a
# busy machine disturbs far less than throughput: on a shared box, read the CPU cost.
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
# cpu_ns PID: CPU time of every thread of PID so far, in nanoseconds.
cpu_ns() {
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}'
}
# run PORT PID P: one round against the server PORT (process PID); prints "req/s ns-per-request".
run() {
  local before after out
  before=$(cpu_ns "$2")
  out=$(bench "$1" -c 50 -P "$3" --clients 1000000)
  after=$(cpu_ns "$2")
  python3 -c 'import json,sys; v=json.loads(sys.argv[1]); print(v["requests_per_sec"], (int(sys.argv[3])-int(sys.argv[2]))/max(v["requests"],1))' "$out" "$before" "$after"
}
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
for shape in "" "--threads 1"; do
  B=$(free_port); T=$(free_port)
  # shellcheck disable=SC2086
  server "$WORK/herd-server-base" "$B" $shape
  BP=${PIDS[-1]}
  # shellcheck disable=SC2086
  server "$BIN/herd-server" "$T" $shape
  TP=${PIDS[-1]}
  for P in 1 16; do
    base=(); this=(); base_cpu=(); this_cpu=()
    for r in $(seq 1 "$ROUNDS"); do
      read -r b bc < <(run "$B" "$BP" "$P")
      read -r t tc < <(run "$T" "$TP" "$P")
      base+=("$b"); this+=("$t"); base_cpu+=("$bc"); this_cpu+=("$tc")
      printf '  %s P%s round %s: base %.0f req/s %.0f ns/req, with counters %.0f req/s %.0f ns/req\n' \
        "${shape:-multi-thread}" "$P" "$r" "$b" "$bc" "$t" "$tc" >&2
    done
    mb=$(median "${base[@]}"); mt=$(median "${this[@]}")
    cb=$(median "${base_cpu[@]}"); ct=$(median "${this_cpu[@]}")
    cost=$(python3 -c 'import sys; b,t=float(sys.argv[1]),float(sys.argv[2]); print(f"{(1-t/b)*100:+.1f} %" if b else "n/a")' "$mb" "$mt")
    cpu=$(python3 -c 'import sys; b,t=float(sys.argv[1]),float(sys.argv[2]); print(f"{(t/b-1)*100:+.1f} %" if b else "n/a")' "$cb" "$ct")
    printf '%-12s P%-2s base %8.0f req/s %6.0f ns/req  with counters %8.0f req/s %6.0f ns/req  cost: throughput %s, CPU %s\n' \
      "${shape:-multi-thread}" "$P" "$mb" "$cb" "$mt" "$ct" "$cost" "$cpu"
  done
  kill "${PIDS[-1]}" "${PIDS[-2]}" 2>/dev/null || true
done
