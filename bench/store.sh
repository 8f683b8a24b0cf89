#!/usr/bin/env bash
# Durability: IAMAT with --data-dir at fsync no / everysec / always against no data dir, Redis SET with
# its append-only file at the same three settings (and without) beside them, same generator, same box;
# the start-up load of 1M clients; journal bytes per record; kill -9 under load, then every
# acknowledged record checked on the restarted server.
#   bench/store.sh            (DURATION=5 seconds a run by default; KILLS=5 kill -9 rounds per setting)
source "$(dirname "$0")/common.sh"
build
need_redis
KILLS="${KILLS:-5}"

# store_server PORT FSYNC: a lone server keeping its records in $WORK/data-PORT, line logging off.
store_server() {
  local port=$1 fsync=$2
  printf '[log]\nlines = false\n[store]\ndir = "%s"\nfsync = "%s"\n[[server]]\nname = "Alford"\nlisten = "127.0.0.1:%s"\n' \
    "$WORK/data-$port" "$fsync" "$port" > "$WORK/store-$port.toml"
  "$BIN/herd-server" serve Alford --config "$WORK/store-$port.toml" --log-dir "$WORK/logs" 2>>"$WORK/store-$port.err" &
  LAST=$!
  PIDS+=("$LAST")
  wait_port "$port"
}

# redis_fsync PORT SETTING: Redis with AOF at SETTING (always, everysec, no) or without AOF (off).
redis_fsync() {
  local port=$1 setting=$2
  mkdir -p "$WORK/redis-$port"
  if [ "$setting" = off ]; then
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK/redis-$port" --daemonize no >/dev/null &
  else
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync "$setting" \
      --dir "$WORK/redis-$port" --daemonize no >/dev/null &
  fi
  PIDS+=($!)
  wait_port "$port"
}

run() { # label port args…
  local label=$1 port=$2; shift 2
  local j; j=$(bench "$port" "$@")
  printf '%-30s %10.0f req/s   p99 %8.1f µs  errors %s\n' "$label" "$(field "$j" requests_per_sec)" "$(field "$j" latency_us.p99)" "$(field "$j" errors)" >&2
  field "$j" requests_per_sec
}

H0=$(free_port); one_server "$H0"
declare -A HP RP
for f in no everysec always; do HP[$f]=$(free_port); store_server "${HP[$f]}" "$f"; done
for f in off no everysec always; do RP[$f]=$(free_port); redis_fsync "${RP[$f]}" "$f"; done
# An AT line's worth of value, so Redis appends about what the journal does.
SET='SET kiwi.cs.ucla.edu AT_Alford_+0.000457229_kiwi.cs.ucla.edu_+34.068930-118.445127_1795612826.669595243'

for P in 1 16; do
  echo "== IAMAT / SET, 50 connections, pipeline $P" >&2
  base=$(run "herd, no data dir" "$H0" -c 50 -P "$P" --clients 1000000)
  rbase=$(run "redis SET, no AOF" "${RP[off]}" -c 50 -P "$P" --raw-line "$SET")
  for f in no everysec always; do
    h=$(run "herd --data-dir fsync=$f" "${HP[$f]}" -c 50 -P "$P" --clients 1000000)
    r=$(run "redis SET appendfsync $f" "${RP[$f]}" -c 50 -P "$P" --raw-line "$SET")
    echo "P$P fsync=$f: herd $(ratio "$h" "$base")x of no data dir; redis $(ratio "$r" "$rbase")x of no AOF; herd/redis $(ratio "$h" "$r")"
  done
done

echo "== 1M clients: journal size and start-up load" >&2
L=$(free_port); store_server "$L" no
"$BIN/herd" --to "127.0.0.1:$L" bench --json -c 50 -P 16 -n 1000000 --clients 1000000 >/dev/null
kill -TERM "$LAST"; wait "$LAST" 2>/dev/null || true
bytes=$(cat "$WORK/data-$L"/Alford/journal.* | wc -c)
store_server "$L" no
# The port is bound before the load: wait for the second start's "loaded" line.
for _ in $(seq 1 600); do [ "$(grep -ac "loaded" "$WORK/store-$L.err")" -ge 2 ] && break; sleep 0.1; done
loaded=$(grep -a "loaded" "$WORK/store-$L.err" | tail -1)
echo "$loaded"
# CPU time of the whole start (every thread): on a busy box the wall time above mostly waits for a core.
echo "start-up CPU time: $(awk '{printf "%.2f s", ($14+$15)/100}' "/proc/$LAST/stat")"
records=$(echo "$loaded" | sed -E 's/.*\(([0-9]+) records.*/\1/')
echo "journal: $bytes bytes for $records records: $(python3 -c "print(f'{$bytes/$records:.1f}')") bytes per record"
kill -TERM "$LAST"; wait "$LAST" 2>/dev/null || true

echo "== kill -9 under a pipelined flood (4 connections, batches of 100), restart, check every acknowledged record" >&2
for f in always everysec no; do
  rounds=$KILLS; [ "$f" = no ] && rounds=1
  for i in $(seq 1 "$rounds"); do
    K=$(free_port); store_server "$K" "$f"
    "$BIN/examples/ack_flood" flood "127.0.0.1:$K" 4 100 "$WORK/acked-$K" 2>/dev/null &
    flood=$!
    sleep 1.5
    kill -9 "$LAST"; wait "$LAST" 2>/dev/null || true
    wait "$flood" || true
    store_server "$K" "$f"
    echo "fsync=$f round $i: $("$BIN/examples/ack_flood" check "127.0.0.1:$K" "$WORK/acked-$K")"
    kill -TERM "$LAST"; wait "$LAST" 2>/dev/null || true
  done
done
