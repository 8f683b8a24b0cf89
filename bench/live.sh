#!/usr/bin/env bash
# What an open live page costs the IAMAT path (issue: "it samples; it never slows the herd"): a lone
# server with an admin address, IAMAT load, 50 connections, pipeline 1 and 16, rounds interleaved
# without and with a page attached (a `curl -N` reading `GET /events`: the server then gathers the
# herd and sends an event every 400 ms, and samples one IAMAT per batch). Prints each round and the
# ratio of medians (with / without). A browser would cost the same on the server; curl is used so the
# page's own rendering does not take CPU from the server on a small machine.
#   ROUNDS=3 DURATION=5 bench/live.sh
source "$(dirname "$0")/common.sh"
ROUNDS="${ROUNDS:-3}"
command -v curl >/dev/null || { echo "bench/live.sh needs curl" >&2; exit 1; }
build
PORT=$(free_port); ADMIN=$(free_port)
printf '[log]\nlines = false\n[[server]]\nname = "Alford"\nlisten = "127.0.0.1:%s"\nadmin = "127.0.0.1:%s"\n' \
  "$PORT" "$ADMIN" > "$WORK/live.toml"
"$BIN/herd-server" serve Alford --config "$WORK/live.toml" --log-dir "$WORK/logs" 2>/dev/null &
PIDS+=($!)
wait_port "$PORT"
wait_port "$ADMIN"
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
for P in 1 16; do
  without=(); with=()
  for r in $(seq 1 "$ROUNDS"); do
    a=$(field "$(bench "$PORT" -c 50 -P "$P" --clients 100000)" requests_per_sec)
    curl -sN "http://127.0.0.1:$ADMIN/events" > "$WORK/events-$P-$r" &
    page=$!
    b=$(field "$(bench "$PORT" -c 50 -P "$P" --clients 100000)" requests_per_sec)
    kill "$page" 2>/dev/null || true
    wait "$page" 2>/dev/null || true
    events=$(grep -c '^data: ' "$WORK/events-$P-$r" || true)
    sampled=$(grep -o '"client":' "$WORK/events-$P-$r" | wc -l)
    without+=("$a"); with+=("$b")
    printf '  P%s round %s: without a page %.0f req/s, with a page %.0f req/s (%s events, %s samples)\n' \
      "$P" "$r" "$a" "$b" "$events" "$sampled" >&2
  done
  ma=$(median "${without[@]}"); mb=$(median "${with[@]}")
  printf 'P%-2s without a page %8.0f req/s  with a page open %8.0f req/s  ratio %s\n' "$P" "$ma" "$mb" "$(ratio "$mb" "$ma")"
done
