#!/usr/bin/env bash
# What keeping the reconciliation fingerprint costs the IAMAT path (issue: catch-up by difference, goal
# ≤ 5 % of c50 P16 throughput): a lone server of this tree against the same tree with the fingerprint
# update stubbed out (a scratch copy in a temporary worktree, where the cache's store skips the two
# XXH3 hashes and the trie update), IAMAT load over 1M clients, 50 connections, pipeline 16 (and 1),
# rounds interleaved (stub, this, stub, this, …) so drift hits both alike. Prints each round and the
# ratio of medians. PORT, if set, is the first of two ports to use (else free ones are picked).
# Part 2 counts instructions instead (valgrind's callgrind, which other work on the box does not
# disturb): the node core's IAMAT path (`node_loop`) against the fingerprint's share of the same IAMATs
# alone, each at two counts so set-up cancels out. PARTS="2" runs only part 2.
#   ROUNDS=5 DURATION=5 bench/fingerprint.sh
source "$(dirname "$0")/common.sh"
ROUNDS="${ROUNDS:-5}"
PARTS="${PARTS:-1 2}"
build
if [[ " $PARTS " == *" 2 "* ]]; then
  command -v valgrind >/dev/null || (apt-get update -qq && apt-get install -y -qq valgrind) >/dev/null
  # ir ARGS…: instructions node_loop executes with ARGS.
  ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN/examples/node_loop" "$@" 2>&1 | awk '/Collected/ {print $NF}'; }
  C=100000; N1=200000; N2=1200000
  declare -A per
  for mode in iamat fingerprint frame; do
    arg=(); [ "$mode" != iamat ] && arg=("$mode")
    a=$(ir "$N1" "$C" "${arg[@]}"); b=$(ir "$N2" "$C" "${arg[@]}")
    per[$mode]=$(python3 -c 'import sys; print((int(sys.argv[2])-int(sys.argv[1]))/(int(sys.argv[4])-int(sys.argv[3])))' "$a" "$b" "$N1" "$N2")
    printf '  %-12s %12s instructions for %s IAMATs, %12s for %s: %.1f an IAMAT\n' "$mode" "$a" "$N1" "$b" "$N2" "${per[$mode]}" >&2
  done
  python3 -c 'import sys; i,f,r=map(float,sys.argv[1:]); print(f"instructions an IAMAT, 100,000 clients: node core {i:.0f}, fingerprint share {f-r:.0f} = {100*(f-r)/i:.1f} % of it")' "${per[iamat]}" "${per[fingerprint]}" "${per[frame]}"
  [[ " $PARTS " == *" 1 "* ]] || exit 0
fi
git -C "$ROOT" worktree add -q --detach "$WORK/stub" HEAD
trap 'git -C "$ROOT" worktree remove --force "$WORK/stub" 2>/dev/null || true; cleanup' EXIT
# The stub: the cache stores records without hashing them or touching the trie. Each edit must apply.
CACHE="$WORK/stub/herd-server/src/node/cache.rs"
perl -0pi -e '
  s/sync::hash\(l\)/0u64/g or die "hashes";
  s/\n\s*let key = sync::key\(entry\.client\(\)\);// or die "push: key";
  s/\n\s*self\.sketch\.insert\(index, key, record, &self\.entries\);// or die "push: trie";
  s/\n\s*self\.sketch\.update\(sync::key\(slot\.client\(\)\), old, new\);// or die "replace: trie";
' "$CACHE"
(cd "$WORK/stub" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release -q -p herd-server --bins 2>/dev/null)
cp "$ROOT/target/release/herd-server" "$WORK/herd-server-stub"
build # the tree's own binary again (the stub build replaced it in the shared target folder)
# server BINARY PORT: a lone server, line logging off.
server() {
  local bin=$1 port=$2
  printf '[log]\nlines = false\n[[server]]\nname = "Alford"\nlisten = "127.0.0.1:%s"\n' "$port" > "$WORK/s-$port.toml"
  "$bin" serve Alford --config "$WORK/s-$port.toml" --log-dir "$WORK/logs" 2>/dev/null &
  PIDS+=($!)
  wait_port "$port"
}
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
if [ -n "${PORT:-}" ]; then S=$PORT; T=$((PORT + 1)); else S=$(free_port); T=$(free_port); fi
server "$WORK/herd-server-stub" "$S"
server "$BIN/herd-server" "$T"
for P in 16 1; do
  stub=(); this=()
  for r in $(seq 1 "$ROUNDS"); do
    s=$(field "$(bench "$S" -c 50 -P "$P" --clients 1000000)" requests_per_sec)
    t=$(field "$(bench "$T" -c 50 -P "$P" --clients 1000000)" requests_per_sec)
    stub+=("$s"); this+=("$t")
    printf '  P%s round %s: stubbed %.0f req/s, with the fingerprint %.0f req/s\n' "$P" "$r" "$s" "$t" >&2
  done
  ms=$(median "${stub[@]}"); mt=$(median "${this[@]}")
  printf 'c50 P%-2s stubbed %8.0f req/s  with the fingerprint %8.0f req/s  ratio %s\n' "$P" "$ms" "$mt" "$(ratio "$mt" "$ms")"
done
