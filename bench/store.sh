#!/usr/bin/env bash
# Durability: IAMAT with --data-dir at fsync no / everysec / always against no data dir, Redis SET with
# its append-only file at the same three settings (and without) beside them, same generator, same box;
# the start-up load of 1M clients; journal bytes per record; kill -9 under load, then every
# acknowledged record checked on the restarted server.
#   bench/store.sh            (DURATION=5 seconds a run by default; ROUNDS=3 rounds of every target,
#                             interleaved; KILLS=5 kill -9 rounds per setting)
source "$(dirname "$0")/common.sh"
build
need_redis
KILLS="${KILLS:-5}"
ROUNDS="${ROUNDS:-3}"

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

H0=$(free_port); one_server "$H0"
declare -A HP RP SP
SP[none]=${PIDS[-1]}
for f in no everysec always; do HP[$f]=$(free_port); store_server "${HP[$f]}" "$f"; SP[$f]=$LAST; done
for f in off no everysec always; do RP[$f]=$(free_port); redis_fsync "${RP[$f]}" "$f"; done
HP[none]=$H0
# An AT line's worth of value, so Redis appends about what the journal does.
SET='SET kiwi.cs.ucla.edu AT_Alford_+0.000457229_kiwi.cs.ucla.edu_+34.068930-118.445127_1795612826.669595243'

# Every herd server starts the rounds holding the same million clients (the runs then update them),
# so none of them is measured while it is still inserting.
for f in none no everysec always; do
  "$BIN/herd" --to "127.0.0.1:${HP[$f]}" bench --json -c 50 -P 16 -n 1000000 --clients 1000000 >/dev/null
done

# ROUNDS rounds, every target once per round (drift hits all alike); medians, and ratios of medians.
declare -A RATE CPUS
for r in $(seq 1 "$ROUNDS"); do
  for P in 1 16; do
    echo "== round $r: IAMAT / SET, 50 connections, pipeline $P" >&2
    for f in none no everysec always; do
      t0=$(cpu_ticks "${SP[$f]}")
      j=$(bench "${HP[$f]}" -c 50 -P "$P" --clients 1000000)
      t1=$(cpu_ticks "${SP[$f]}")
      RATE["herd,$f,$P"]+="$(field "$j" requests_per_sec) "
      CPUS["$f,$P"]+="$(python3 -c 'import sys; print((int(sys.argv[2])-int(sys.argv[1]))/float(sys.argv[3])*1e6/max(1.0,float(sys.argv[4])))' "$t0" "$t1" "$(getconf CLK_TCK)" "$(field "$j" requests)") "
      printf '  %-28s %10.0f req/s   p99 %8.1f µs  errors %s\n' "herd, data dir: $f" "$(field "$j" requests_per_sec)" "$(field "$j" latency_us.p99)" "$(field "$j" errors)" >&2
    done
    for f in off no everysec always; do
      j=$(bench "${RP[$f]}" -c 50 -P "$P" --raw-line "$SET")
      RATE["redis,$f,$P"]+="$(field "$j" requests_per_sec) "
      printf '  %-28s %10.0f req/s   p99 %8.1f µs  errors %s\n' "redis SET, AOF: $f" "$(field "$j" requests_per_sec)" "$(field "$j" latency_us.p99)" "$(field "$j" errors)" >&2
    done
  done
done
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
k() { python3 -c 'import sys; print(f"{float(sys.argv[1])/1000:.1f}k")' "$1"; }
echo
echo "Medians of $ROUNDS rounds, ${DURATION} s each, 50 connections; herd server CPU per request (µs, all threads):"
echo
echo "| setting | herd IAMAT P1 | × no data dir | Redis SET P1 | × no AOF | herd IAMAT P16 | × no data dir | Redis SET P16 | × no AOF | herd µs/req P1 · P16 |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for f in none no everysec always; do
  rf=$f; [ "$f" = none ] && rf=off
  row="| $f"
  for P in 1 16; do
    h=$(median ${RATE["herd,none,$P"]}); hf=$(median ${RATE["herd,$f,$P"]})
    r=$(median ${RATE["redis,off,$P"]}); rr=$(median ${RATE["redis,$rf,$P"]})
    row+=" | $(k "$hf") | $(ratio "$hf" "$h") | $(k "$rr") | $(ratio "$rr" "$r")"
  done
  row+=" | $(python3 -c 'import sys; print(f"{float(sys.argv[1]):.2f} · {float(sys.argv[2]):.2f}")' "$(median ${CPUS["$f,1"]})" "$(median ${CPUS["$f,16"]})") |"
  echo "$row"
done
for P in 1 16; do
  for f in no everysec always; do
    echo "P$P fsync=$f: herd $(ratio "$(median ${RATE["herd,$f,$P"]})" "$(median ${RATE["herd,none,$P"]})")x of no data dir; redis $(ratio "$(median ${RATE["redis,$f,$P"]})" "$(median ${RATE["redis,off,$P"]})")x of no AOF; herd/redis $(ratio "$(median ${RATE["herd,$f,$P"]})" "$(median ${RATE["redis,$f,$P"]})")"
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
