#!/usr/bin/env bash
# The client door (PROTOCOL.md §10): IAMATs a second over TCP lines, HTTP/1.1 keep-alive JSON and
# WebSocket messages at c50 (one request in flight per connection, rounds interleaved); the delivery
# time of a watched record from an IAMAT at one server to a watcher two hops away; and what 10,000
# watches cost the TCP IAMAT path. Servers: Alford - Ball - Welsh on loopback, line logging off.
#
#   bash bench/door.sh            # DURATION=3 ROUNDS=5 CONNS=50 WATCHES=10000 FENCE=2000
source "$(dirname "$0")/common.sh"
ROUNDS="${ROUNDS:-5}"; CONNS="${CONNS:-50}"; WATCHES="${WATCHES:-10000}"; FENCE="${FENCE:-2000}"
DURATION="${DURATION:-3}"
(cd "$ROOT" && cargo build --release -q -p herd-server --bin herd-server && cargo build --release -q -p herd-tests --example door_bench)

declare -A TCP HTTP
for n in Alford Ball Welsh; do TCP[$n]=$(free_port); HTTP[$n]=$(free_port); done
{
  printf '[log]\nlines = false\n[limits]\nmax_watches_per_connection = 100\n'
  printf '[[server]]\nname = "Alford"\nlisten = "127.0.0.1:%s"\nhttp = "127.0.0.1:%s"\nneighbors = ["Ball"]\n' "${TCP[Alford]}" "${HTTP[Alford]}"
  printf '[[server]]\nname = "Ball"\nlisten = "127.0.0.1:%s"\nhttp = "127.0.0.1:%s"\nneighbors = ["Welsh"]\n' "${TCP[Ball]}" "${HTTP[Ball]}"
  printf '[[server]]\nname = "Welsh"\nlisten = "127.0.0.1:%s"\nhttp = "127.0.0.1:%s"\n' "${TCP[Welsh]}" "${HTTP[Welsh]}"
} > "$WORK/door.toml"
for n in Alford Ball Welsh; do
  "$BIN/herd-server" serve "$n" --config "$WORK/door.toml" --log-dir "$WORK/logs" 2>/dev/null &
  PIDS+=($!)
done
for n in Alford Ball Welsh; do wait_port "${TCP[$n]}"; wait_port "${HTTP[$n]}"; done
B="$BIN/examples/door_bench"
echo "== IAMAT rate at Alford, c$CONNS, ${DURATION}s rounds x $ROUNDS"
"$B" rate "127.0.0.1:${TCP[Alford]}" "127.0.0.1:${HTTP[Alford]}" "$CONNS" "$DURATION" "$ROUNDS"
echo "== fence: IAMAT at Welsh, watcher at Alford (two hops), $FENCE records"
"$B" fence "127.0.0.1:${TCP[Welsh]}" "127.0.0.1:${HTTP[Alford]}" "$FENCE"
echo "== $WATCHES watches at Alford: TCP IAMAT rate, c$CONNS"
"$B" watchers "127.0.0.1:${TCP[Alford]}" "127.0.0.1:${HTTP[Alford]}" "$WATCHES" 100 "$CONNS" "$DURATION" "$ROUNDS"
