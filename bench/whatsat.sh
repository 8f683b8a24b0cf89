#!/usr/bin/env bash
# Target 5: WHATSAT with the offline back-end against Redis GEOSEARCH (10 km, 5 results) on the same
# GeoNames places. BASE_BIN=path/to/herd-server adds another build ("base"): then ROUNDS rounds
# (default 3) alternate the two herd servers, and the medians and their ratio are printed.
source "$(dirname "$0")/common.sh"
build
need_redis
R=$(free_port); H=$(free_port)
start_redis "$R"; one_server "$H"
python3 - "$ROOT/herd-server/data/cities1000.csv" > "$WORK/geo.redis" <<'PY'
import csv, sys
with open(sys.argv[1], newline="") as f:
    rows = csv.reader(f); next(rows)
    for i, r in enumerate(rows):
        lat, lon = float(r[0]), float(r[1])
        if abs(lat) <= 85.05112878:
            print(f"GEOADD places {lon} {lat} p{i}")
PY
redis-cli -p "$R" < "$WORK/geo.redis" > /dev/null
echo "== redis-benchmark GEOSEARCH, 50 clients"
redis-benchmark -p "$R" -c 50 -n 200000 -q GEOSEARCH places FROMLONLAT -118.445127 34.068930 BYRADIUS 10 km ASC COUNT 5 | tr '\r' '\n' | tail -n 2
echo "== herd WHATSAT 10 km, 5 results, offline places, 50 connections"
whatsat() { bench "$1" -c 50 --mix 0:1 --clients 10000 --radius 10 --bound 5; }
if [ -z "${BASE_BIN:-}" ]; then
  j=$(whatsat "$H")
  echo "$(field "$j" requests_per_sec) req/s, p99 $(field "$j" latency_us.p99) µs, errors $(field "$j" errors)"
  exit 0
fi
B=$(free_port); SERVER="$BASE_BIN" one_server "$B"
this=(); base=()
for r in $(seq 1 "${ROUNDS:-3}"); do
  j=$(whatsat "$H"); this+=("$(field "$j" requests_per_sec)")
  echo "round $r: this tree $(field "$j" requests_per_sec) req/s, errors $(field "$j" errors)"
  j=$(whatsat "$B"); base+=("$(field "$j" requests_per_sec)")
  echo "round $r: base      $(field "$j" requests_per_sec) req/s, errors $(field "$j" errors)"
done
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
t=$(median "${this[@]}"); b=$(median "${base[@]}")
echo "medians: this tree $t req/s, base $b req/s: $(ratio "$t" "$b")×"
