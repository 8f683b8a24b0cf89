#!/usr/bin/env bash
# The cost of logging every line (PROTOCOL.md §6): herd IAMAT with every line logged (the default), the
# same with `[log] lines = false`, Redis PING, and Redis SET writing its append-only file (fsync every
# second) — same generator, one run, 50 connections, pipeline 1 and 16, both runtime shapes. Then the
# log's bytes per request, and the logged server's memory under a flood of big WHATSATs.
#   bench/logs.sh            (DURATION=5 seconds a run by default; FLOOD=10 seconds of WHATSAT flood)
source "$(dirname "$0")/common.sh"
build
need_redis
FLOOD="${FLOOD:-10}"
R=$(free_port); RA=$(free_port)
HL=$(free_port); HU=$(free_port); HL1=$(free_port); HU1=$(free_port); HW=$(free_port)
start_redis "$R"; start_redis_aof "$RA"
# No size rotation on these two, so the file's growth is the bytes logged (rotation costs one rename).
LOG_TOML="max_bytes = 0" logged_server "$HL"; LOG_TOML="max_bytes = 0" logged_server "$HL1" --threads 1
one_server "$HU"; one_server "$HU1" --threads 1

rate() { field "$1" requests_per_sec; }
run() { # label port args…
  local label=$1 port=$2; shift 2
  local j; j=$(bench "$port" "$@")
  printf '%-40s %10.0f req/s   p99 %8.1f µs  errors %s\n' "$label" "$(rate "$j")" "$(field "$j" latency_us.p99)" "$(field "$j" errors)" >&2
  echo "$j"
}

for P in 1 16; do
  echo "== 50 connections, pipeline $P" >&2
  redis=$(run "redis-server PING" "$R" -c 50 -P "$P" --raw-line PING)
  aof=$(run "redis-server SET, appendfsync everysec" "$RA" -c 50 -P "$P" --raw-line "SET k v")
  before=$(stat -c %s "$WORK/logs-$HL/Alford.log")
  logged=$(run "herd IAMAT logged (multi-thread)" "$HL" -c 50 -P "$P" --clients 1000000)
  after=$(stat -c %s "$WORK/logs-$HL/Alford.log")
  rm -f "$WORK/logs-$HL/Alford.log"; kill -HUP "${PIDS[2]}"   # start each run with an empty file
  unlogged=$(run "herd IAMAT lines = false (multi-thread)" "$HU" -c 50 -P "$P" --clients 1000000)
  logged1=$(run "herd IAMAT logged (--threads 1)" "$HL1" -c 50 -P "$P" --clients 1000000)
  rm -f "$WORK/logs-$HL1/Alford.log"; kill -HUP "${PIDS[3]}"
  unlogged1=$(run "herd IAMAT lines = false (--threads 1)" "$HU1" -c 50 -P "$P" --clients 1000000)
  echo "P$P multi-thread: logged/unlogged $(ratio "$(rate "$logged")" "$(rate "$unlogged")")  logged/redis-PING $(ratio "$(rate "$logged")" "$(rate "$redis")")  logged/redis-SET-aof $(ratio "$(rate "$logged")" "$(rate "$aof")")"
  echo "P$P --threads 1:  logged/unlogged $(ratio "$(rate "$logged1")" "$(rate "$unlogged1")")  logged/redis-PING $(ratio "$(rate "$logged1")" "$(rate "$redis")")  logged/redis-SET-aof $(ratio "$(rate "$logged1")" "$(rate "$aof")")"
  echo "P$P log bytes per request: $(python3 -c 'import sys; print(round((int(sys.argv[2])-int(sys.argv[1]))/float(sys.argv[3])))' "$before" "$after" "$(field "$logged" requests)")"
done

echo "== WHATSAT flood: 50 connections, pipeline 16, radius 50 km, bound 20, ${FLOOD} s, every line logged" >&2
logged_server "$HW"
pid=${PIDS[-1]}
exchange() { "$BIN/herd" --to "127.0.0.1:$HW" bench --json -c 50 -P 16 -d "$FLOOD" --mix 0:1 --clients 10000 --radius 50 --bound 20; }
peak=0
exchange > "$WORK/flood.json" &
gen=$!
while kill -0 "$gen" 2>/dev/null; do
  r=$(rss_kb "$pid"); [ "$r" -gt "$peak" ] && peak=$r
  sleep 0.2
done
wait "$gen"
j=$(cat "$WORK/flood.json")
size=$(du -sb "$WORK/logs-$HW" | cut -f1)
echo "WHATSAT flood: $(rate "$j") req/s, errors $(field "$j" errors); peak RSS $((peak / 1024)) MB; log $((size / 1024 / 1024)) MB in ${FLOOD} s ($(python3 -c 'import sys; print(round(int(sys.argv[1])/float(sys.argv[2])))' "$size" "$(field "$j" requests)") bytes a request)"
