#!/usr/bin/env bash
# Target 4: the five default servers (separate processes), IAMAT load at Alford, and how long each
# update takes to become visible at Holiday, two hops away, while the load runs.
source "$(dirname "$0")/common.sh"
build
names=(Alford Ball Hamilton Holiday Welsh)
declare -A port neighbors=([Alford]='"Hamilton", "Welsh"' [Ball]='"Holiday", "Welsh"' [Hamilton]='"Alford", "Holiday"' [Holiday]='"Ball", "Hamilton"' [Welsh]='"Alford", "Ball"')
printf '[log]\nlines = false\n' > "$WORK/herd.toml"
for n in "${names[@]}"; do
  port[$n]=$(free_port)
  printf '[[server]]\nname = "%s"\nlisten = "127.0.0.1:%s"\nneighbors = [%s]\n' "$n" "${port[$n]}" "${neighbors[$n]}" >> "$WORK/herd.toml"
done
for n in "${names[@]}"; do
  "$BIN/herd-server" serve "$n" --config "$WORK/herd.toml" --log-dir "$WORK/logs" --threads 1 2>/dev/null &
  PIDS+=($!)
done
for n in "${names[@]}"; do wait_port "${port[$n]}"; done
sleep 1 # links come up

echo "== idle herd: Alford -> Holiday"
"$BIN/examples/propagation" "127.0.0.1:${port[Alford]}" "127.0.0.1:${port[Holiday]}" 10000
echo "== under load: IAMAT at Alford, 50 connections, pipeline 16, 1M client ids"
"$BIN/herd" --to "127.0.0.1:${port[Alford]}" bench -c 50 -P 16 -d "$((DURATION + 3))" --clients 1000000 > "$WORK/load.txt" &
LOAD=$!
sleep 1
"$BIN/examples/propagation" "127.0.0.1:${port[Alford]}" "127.0.0.1:${port[Holiday]}" 3000
wait "$LOAD"
cat "$WORK/load.txt"
# Every server holds the same record of a client the load updated.
for n in "${names[@]}"; do
  printf '%-9s ' "$n"; "$BIN/herd" --to "127.0.0.1:${port[$n]}" send "WHATSAT bench-1 1 0" | head -1 || true
done
