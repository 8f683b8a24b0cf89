#!/usr/bin/env bash
# Peer trust: what the encrypted channel costs. For the default herd without a secret (plain lines)
# and with one (Noise frames), in one run:
#  1. records flooded per second over one link: Alford holds ~630k clients, Hamilton starts empty and
#     catches up over one link (from its `peer link up` to its `caught up with peer by reconciliation` log line);
#  2. propagation Alford -> Holiday (two hops, the farthest server) p50/p99, idle and under a
#     pipelined IAMAT load at Alford.
source "$(dirname "$0")/common.sh"
build
names=(Alford Ball Hamilton Holiday Welsh)
declare -A neighbors=([Alford]='"Hamilton", "Welsh"' [Ball]='"Holiday", "Welsh"' [Hamilton]='"Alford", "Holiday"' [Holiday]='"Ball", "Hamilton"' [Welsh]='"Alford", "Ball"')
RECORDS="${RECORDS:-1000000}"

run_mode() { # MODE ("plain" or "secret")
  local mode=$1 dir="$WORK/$1"
  declare -A port
  mkdir -p "$dir"
  printf '[log]\nlines = false\n' > "$dir/herd.toml"
  [ "$mode" = secret ] && printf '[herd]\nsecret = "bench secret 9d1c"\n' >> "$dir/herd.toml"
  for n in "${names[@]}"; do
    port[$n]=$(free_port)
    printf '[[server]]\nname = "%s"\nlisten = "127.0.0.1:%s"\nneighbors = [%s]\n' "$n" "${port[$n]}" "${neighbors[$n]}" >> "$dir/herd.toml"
  done
  start() {
    "$BIN/herd-server" serve "$1" --config "$dir/herd.toml" --log-dir "$dir/logs" --threads 1 2>/dev/null &
    PIDS+=($!)
    wait_port "${port[$1]}"
  }
  start Alford
  "$BIN/herd" --to "127.0.0.1:${port[Alford]}" bench -c 50 -P 16 -n "$RECORDS" --clients "$RECORDS" --json > /dev/null
  start Hamilton
  for _ in $(seq 1 600); do
    grep -q 'caught up with peer by reconciliation.*peer=Alford' "$dir/logs/Hamilton.log" 2>/dev/null && break
    sleep 0.1
  done
  python3 - "$dir/logs/Hamilton.log" "$mode" <<'PY'
import re, sys, datetime
log = open(sys.argv[1]).read().splitlines()
def at(line):
    return datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
up = next(at(l) for l in log if "peer link up" in l and "name=Alford" in l)
done = next(l for l in log if "caught up with peer by reconciliation" in l and "peer=Alford" in l)
count = int(re.search(r"received=(\d+)", done).group(1))
secs = (at(done) - up).total_seconds()
print(f"{sys.argv[2]:>6}: one link carried {count} records in {secs:.3f} s = {count / secs / 1000:.0f}k records/s")
PY
  for n in Ball Holiday Welsh; do start "$n"; done
  # Every server has caught up with its neighbours before the probes start.
  for n in Ball Holiday Welsh; do
    for _ in $(seq 1 600); do
      [ "$(grep -c 'caught up with peer by reconciliation' "$dir/logs/$n.log" 2>/dev/null)" -ge 2 ] && break
      sleep 0.1
    done
  done
  echo "$mode: propagation Alford -> Holiday, idle"
  "$BIN/examples/propagation" "127.0.0.1:${port[Alford]}" "127.0.0.1:${port[Holiday]}" 5000
  echo "$mode: propagation Alford -> Holiday, under IAMAT load at Alford (c50 P16)"
  "$BIN/herd" --to "127.0.0.1:${port[Alford]}" bench -c 50 -P 16 -d "$((DURATION + 3))" --clients 1000000 > "$dir/load.txt" &
  local load=$!
  sleep 1
  "$BIN/examples/propagation" "127.0.0.1:${port[Alford]}" "127.0.0.1:${port[Holiday]}" 3000
  wait "$load"
  grep -E '^requests:' "$dir/load.txt" | sed "s/^/$mode load: /"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}

run_mode plain
run_mode secret
