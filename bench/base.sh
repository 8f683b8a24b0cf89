#!/usr/bin/env bash
# This tree's server against another build (BASE_BIN), nothing else running: IAMAT at c50, pipeline 1
# and 16, line logging off, ROUNDS rounds interleaved (base, then this tree, each round). Prints each
# run's rate and the server's CPU time per request (user + system, all its threads), then the medians.
# CPU per request is the steadier figure where other work shares the cores.
#   BASE_BIN=path/to/herd-server bash bench/base.sh     ROUNDS=3, DURATION=3 seconds a run
source "$(dirname "$0")/common.sh"
: "${BASE_BIN:?BASE_BIN=path/to/another herd-server build}"
build
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-3}"
TICK=$(getconf CLK_TCK)

B=$(free_port); SERVER="$BASE_BIN" one_server "$B"; BP=${PIDS[-1]}
N=$(free_port); one_server "$N"; NP=${PIDS[-1]}
declare -A RATES CPUS
for p in 1 16; do
  for r in $(seq 1 "$ROUNDS"); do
    for t in base this; do
      if [ "$t" = base ]; then port=$B; pid=$BP; else port=$N; pid=$NP; fi
      c0=$(cpu_ticks "$pid")
      out=$(bench "$port" -c 50 -P "$p")
      c1=$(cpu_ticks "$pid")
      reqs=$(field "$out" requests)
      rate=$(field "$out" requests_per_sec)
      us=$(python3 -c "print(f'{($c1 - $c0) * 1e6 / $TICK / $reqs:.2f}')")
      echo "P$p round $r $t: $(printf '%.0f' "$rate") req/s, server CPU $us µs/req"
      RATES[$p,$t]+="$rate "; CPUS[$p,$t]+="$us "
    done
  done
done
median() { python3 -c 'import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))' $1; }
echo
echo "| pipeline | base req/s | this req/s | this/base | base CPU µs/req | this CPU µs/req | this/base |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for p in 1 16; do
  rb=$(median "${RATES[$p,base]}"); rt=$(median "${RATES[$p,this]}")
  cb=$(median "${CPUS[$p,base]}"); ct=$(median "${CPUS[$p,this]}")
  printf '| P%s | %.0f | %.0f | %s | %.2f | %.2f | %s |\n' "$p" "$rb" "$rt" "$(ratio "$rt" "$rb")" "$cb" "$ct" "$(ratio "$ct" "$cb")"
done
