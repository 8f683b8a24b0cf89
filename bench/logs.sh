#!/usr/bin/env bash
# The cost of logging every line (PROTOCOL.md §6), and the runtime shapes: herd IAMAT with every line
# logged (the default) and with `[log] lines = false`, for each runtime shape — event loops with the
# default thread count (one below four cores), two loops (`--threads 2`), tokio's work-stealing runtime
# with two workers (`--runtime stealing --threads 2`), and the default shape logged with 1,000 clients
# instead of a million (its table in the CPU's cache) —
# against Redis PING, Redis SET writing its append-only file (fsync every second), and a bare line echo
# on one tokio loop sent PING lines and sent IAMAT lines of the generator's size. Same generator,
# 50 connections, pipeline 1 and 16, ROUNDS rounds interleaved (every target once per round, so drift
# hits all alike); the table gives each target's median and the ratios of medians, and the server's CPU
# time per request (user + system, all its threads: steadier than rates when other work shares the
# cores). Then the log's bytes per request, and the logged server's memory under a flood of big WHATSATs.
#   bench/logs.sh     ROUNDS=3, DURATION=5 seconds a run, FLOOD=10 seconds of WHATSAT flood (0: none),
#                     THREADS=N for the default shape's --threads,
#                     BASE_BIN=path/to/herd-server adds another build (its default runtime) as "base",
#                     PORT_BASE=N to take ports N, N+1, … instead of ports the kernel picks.
source "$(dirname "$0")/common.sh"
build
need_redis
ROUNDS="${ROUNDS:-3}"
FLOOD="${FLOOD:-10}"
THREADS="${THREADS:-}"
threads=(); [ -n "$THREADS" ] && threads=(--threads "$THREADS")

# Targets: name, port; herd targets also a log file (logged) or "-" (unlogged).
NAMES=(); PORTS=(); LOGS=(); SPID=()
redis_target() { NAMES+=("$1"); PORTS+=("$2"); LOGS+=("redis"); SPID+=("${PIDS[-1]}"); }
herd_pair() { # label args…: the same server logged and unlogged
  local label=$1; shift
  local l u; l=$(free_port); u=$(free_port)
  # No size rotation, so the file's growth is the bytes logged (rotation costs one rename).
  LOG_TOML="max_bytes = 0" logged_server "$l" "$@"
  NAMES+=("$label logged"); PORTS+=("$l"); LOGS+=("$WORK/logs-$l/Alford.log"); SPID+=("${PIDS[-1]}")
  one_server "$u" "$@"
  NAMES+=("$label unlogged"); PORTS+=("$u"); LOGS+=("-"); SPID+=("${PIDS[-1]}")
}

R=$(free_port); start_redis "$R"; redis_target "redis PING" "$R"
RA=$(free_port); start_redis_aof "$RA"; redis_target "redis SET aof" "$RA"
# The floor of the runtime itself: a bare line echo on one tokio loop, sent PING lines.
E=$(free_port); "$BIN/examples/line_echo" "127.0.0.1:$E" current >/dev/null 2>&1 & PIDS+=($!); wait_port "$E"
redis_target "echo, one tokio loop" "$E"
# The same echo sent IAMAT lines of the generator's size: the floor of moving an IAMAT's bytes (a 59-byte
# line each way, where herd answers with an AT line of about 80).
NAMES+=("echo, IAMAT lines"); PORTS+=("$E"); LOGS+=("redis"); SPID+=("${SPID[-1]}")
# The default shape (on fewer than four cores: one loop), then two threads of each shape.
herd_pair "loops" "${threads[@]}" --runtime loops
# The default shape again, logged, its IAMATs cycling through 1,000 clients instead of a million: the
# table then stays in the CPU's cache, which shows what the look-up's cache misses cost.
NAMES+=("loops logged, 1k clients"); PORTS+=("${PORTS[-2]}"); LOGS+=("${LOGS[-2]}"); SPID+=("${SPID[-2]}")
herd_pair "two loops" --runtime loops --threads 2
herd_pair "stealing" --runtime stealing --threads 2
if [ -n "${BASE_BIN:-}" ]; then SERVER="$BASE_BIN" herd_pair "base" "${threads[@]}"; fi

IAMAT_LINE="IAMAT bench-500000 +12.3456-123.4567 $(date +%s).123456789"
declare -A RESULTS BYTES CPU
TCK=$(getconf CLK_TCK)
for r in $(seq 1 "$ROUNDS"); do
  for P in 1 16; do
    echo "== round $r, 50 connections, pipeline $P" >&2
    for i in "${!NAMES[@]}"; do
      port=${PORTS[$i]}; log=${LOGS[$i]}
      t0=$(cpu_ticks "${SPID[$i]}")
      case "${NAMES[$i]}" in
        "redis PING"|"echo, one tokio loop") j=$(bench "$port" -c 50 -P "$P" --raw-line PING) ;;
        "echo, IAMAT lines") j=$(bench "$port" -c 50 -P "$P" --raw-line "$IAMAT_LINE") ;;
        "redis SET aof") j=$(bench "$port" -c 50 -P "$P" --raw-line "SET k v") ;;
        *) before=0; [ -f "$log" ] && before=$(stat -c %s "$log")
           clients=1000000; [ "${NAMES[$i]}" = "loops logged, 1k clients" ] && clients=1000
           j=$(bench "$port" -c 50 -P "$P" --clients "$clients") ;;
      esac
      t1=$(cpu_ticks "${SPID[$i]}")
      rate=$(field "$j" requests_per_sec)
      RESULTS["$i,$P"]+="$rate "
      cpu=$(python3 -c 'import sys; print(round((int(sys.argv[2])-int(sys.argv[1]))/float(sys.argv[3])*1e6/max(1.0,float(sys.argv[4])),2))' "$t0" "$t1" "$TCK" "$(field "$j" requests)")
      CPU["$i,$P"]+="$cpu "
      printf '  %-24s %10.0f req/s   p99 %8.1f µs  errors %s  server CPU %5.2f µs/req\n' "${NAMES[$i]}" "$rate" "$(field "$j" latency_us.p99)" "$(field "$j" errors)" "$cpu" >&2
      if [ "$log" != "redis" ] && [ "$log" != "-" ]; then
        after=$(stat -c %s "$log")
        BYTES["$P"]+="$(python3 -c 'import sys; print(round((int(sys.argv[2])-int(sys.argv[1]))/max(1.0,float(sys.argv[3]))))' "$before" "$after" "$(field "$j" requests)") "
        # Start each run with an empty file (SIGHUP reopens it at its path).
        rm -f "$log"; kill -HUP "${SPID[$i]}"
      fi
    done
  done
done

median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
idx() { local n; for n in "${!NAMES[@]}"; do [ "${NAMES[$n]}" = "$1" ] && echo "$n"; done; }
med() { median ${RESULTS["$(idx "$1"),$2"]}; }  # name P
cpu() { python3 -c 'import sys; print(f"{float(sys.argv[1]):.2f}")' "$(median ${CPU["$(idx "$1"),$2"]})"; }
k() { python3 -c 'import sys; print(f"{float(sys.argv[1])/1000:.1f}k")' "$1"; }

echo
echo "Medians of $ROUNDS rounds, ${DURATION} s each, 50 connections (req/s); ratios of medians:"
echo
echo "| shape | P1 logged | P1 unlogged | P1 logged/unlogged · /PING · /SET-aof | P16 logged | P16 unlogged | P16 logged/unlogged · /PING · /SET-aof |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for shape in "loops" "two loops" "stealing" ${BASE_BIN:+base}; do
  row="| $shape"
  for P in 1 16; do
    l=$(med "$shape logged" "$P"); u=$(med "$shape unlogged" "$P")
    ping=$(med "redis PING" "$P"); aof=$(med "redis SET aof" "$P")
    row+=" | $(k "$l") | $(k "$u") | $(ratio "$l" "$u") · $(ratio "$l" "$ping") · $(ratio "$l" "$aof")"
  done
  echo "$row |"
done
for name in "loops logged, 1k clients" "redis PING" "redis SET aof" "echo, one tokio loop" "echo, IAMAT lines"; do
  echo "| $name | $(k "$(med "$name" 1)") | | · $(ratio "$(med "$name" 1)" "$(med "redis PING" 1)") | $(k "$(med "$name" 16)") | | · $(ratio "$(med "$name" 16)" "$(med "redis PING" 16)") |"
done
echo
for P in 1 16; do
  echo "P$P, the default shape against the echo (PING lines · IAMAT lines): logged $(ratio "$(med "loops logged" "$P")" "$(med "echo, one tokio loop" "$P")") · $(ratio "$(med "loops logged" "$P")" "$(med "echo, IAMAT lines" "$P")"), unlogged $(ratio "$(med "loops unlogged" "$P")" "$(med "echo, one tokio loop" "$P")") · $(ratio "$(med "loops unlogged" "$P")" "$(med "echo, IAMAT lines" "$P")")"
done
echo
echo "Server CPU per request (µs, user + system, medians), logged / unlogged:"
echo
echo "| shape | P1 | P16 |"
echo "| --- | --- | --- |"
for shape in "loops" "two loops" "stealing" ${BASE_BIN:+base}; do
  echo "| $shape | $(cpu "$shape logged" 1) / $(cpu "$shape unlogged" 1) | $(cpu "$shape logged" 16) / $(cpu "$shape unlogged" 16) |"
done
for name in "loops logged, 1k clients" "redis PING" "redis SET aof" "echo, one tokio loop" "echo, IAMAT lines"; do
  echo "| $name | $(cpu "$name" 1) | $(cpu "$name" 16) |"
done
echo
echo "Log bytes per request (every logged run): P1 ${BYTES[1]:-}; P16 ${BYTES[16]:-}"

[ "$FLOOD" = 0 ] && exit 0
echo "== WHATSAT flood: 50 connections, pipeline 16, radius 50 km, bound 20, ${FLOOD} s, every line logged" >&2
HW=$(free_port)
logged_server "$HW" "${threads[@]}"
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
echo "WHATSAT flood: $(field "$j" requests_per_sec) req/s, errors $(field "$j" errors); peak RSS $((peak / 1024)) MB; log $((size / 1024 / 1024)) MB in ${FLOOD} s ($(python3 -c 'import sys; print(round(int(sys.argv[1])/float(sys.argv[2])))' "$size" "$(field "$j" requests)") bytes a request)"
