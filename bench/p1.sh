#!/usr/bin/env bash
# Where a non-pipelined IAMAT's time goes, against the bare echo (c50, pipeline 1, the default shape):
# the echo sent PING lines; herd logged and unlogged, IAMATs over a million clients; herd unlogged over
# 1,000 clients (its table in the CPU's cache). For each, ROUNDS rounds interleaved: the rate, the
# server's CPU a request split into user and system time (system: the loopback TCP both servers pay
# alike), the event loop's thread alone (its CPU a request, and how busy it was: 1.00 is a whole core),
# and the generator's own CPU a request (it shares the two cores with the server). Then the medians:
# the unlogged rows are the most the logged server could reach with a log that cost nothing.
#   bench/p1.sh     ROUNDS=3, DURATION=3 seconds a run
source "$(dirname "$0")/common.sh"
build
ROUNDS="${ROUNDS:-3}"
TCK=$(getconf CLK_TCK)

NAMES=(); PORTS=(); SPID=(); ARGS=()
target() { NAMES+=("$1"); PORTS+=("$2"); SPID+=("${PIDS[-1]}"); ARGS+=("$3"); }
E=$(free_port); "$BIN/examples/line_echo" "127.0.0.1:$E" current >/dev/null 2>&1 & PIDS+=($!)
wait_port "$E"; target "echo, one tokio loop" "$E" "--raw-line PING"
L=$(free_port); LOG_TOML="max_bytes = 0" logged_server "$L"; target "herd logged" "$L" "--clients 1000000"
U=$(free_port); one_server "$U"; target "herd unlogged" "$U" "--clients 1000000"
target "herd unlogged, 1k clients" "$U" "--clients 1000"
# Each herd server holds its million clients before the rounds, as it does after logs.sh's first round.
for port in "$L" "$U"; do bench "$port" -c 50 -P 16 --clients 1000000 >/dev/null; done

# ticks PID FIELD: the process's user (14) or system (15) time so far, in clock ticks.
ticks() { awk -v f="$2" '{print $f}' "/proc/$1/stat"; }
declare -A RATE USER SYS LOOP BUSY GEN
for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r" >&2
  for i in "${!NAMES[@]}"; do
    pid=${SPID[$i]}
    u0=$(ticks "$pid" 14); s0=$(ticks "$pid" 15); m0=$(awk '{print $14 + $15}' "/proc/$pid/task/$pid/stat")
    # The generator's CPU: its rusage, read by the parent that waited for it.
    # shellcheck disable=SC2086
    out=$(python3 -c 'import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(u.ru_utime + u.ru_stime); print(r.stdout.strip())' \
      "$BIN/herd" --to "127.0.0.1:${PORTS[$i]}" bench --json -d "$DURATION" -c 50 -P 1 ${ARGS[$i]})
    gen=$(head -1 <<<"$out"); j=$(tail -1 <<<"$out")
    u1=$(ticks "$pid" 14); s1=$(ticks "$pid" 15); m1=$(awk '{print $14 + $15}' "/proc/$pid/task/$pid/stat")
    n=$(field "$j" requests); rate=$(field "$j" requests_per_sec)
    # per SECONDS: microseconds a request.
    per() { python3 -c 'import sys; print(f"{float(sys.argv[1]) * 1e6 / float(sys.argv[2]):.2f}")' "$1" "$n"; }
    secs() { python3 -c 'import sys; print(int(sys.argv[1]) / int(sys.argv[2]))' "$1" "$TCK"; }
    user=$(per "$(secs $((u1 - u0)))"); sys=$(per "$(secs $((s1 - s0)))"); loop=$(per "$(secs $((m1 - m0)))")
    busy=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "$(secs $((m1 - m0)))" "$DURATION")
    RATE[$i]+="$rate "; USER[$i]+="$user "; SYS[$i]+="$sys "; LOOP[$i]+="$loop "; BUSY[$i]+="$busy "
    GEN[$i]+="$(per "$gen") "
    printf '  %-28s %9.0f req/s  server user %s sys %s µs/req  loop %s µs/req, busy %s  generator %s µs/req\n' \
      "${NAMES[$i]}" "$rate" "$user" "$sys" "$loop" "$busy" "$(per "$gen")" >&2
  done
done

median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
echo
echo "Medians of $ROUNDS rounds, ${DURATION} s each, 50 connections, pipeline 1:"
echo
echo "| target | req/s | / echo | server user µs/req | server system µs/req | loop thread µs/req | loop thread busy | generator µs/req |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
echo_rate=$(median ${RATE[0]})
for i in "${!NAMES[@]}"; do
  rate=$(median ${RATE[$i]})
  printf '| %s | %.1fk | %s | %.2f | %.2f | %.2f | %.2f | %.2f |\n' "${NAMES[$i]}" "$(python3 -c "print($rate/1000)")" \
    "$(ratio "$rate" "$echo_rate")" "$(median ${USER[$i]})" "$(median ${SYS[$i]})" "$(median ${LOOP[$i]})" \
    "$(median ${BUSY[$i]})" "$(median ${GEN[$i]})"
done
echo
echo "With the log free, herd logged would be the unlogged row: the ceiling of the logged/echo ratio."
