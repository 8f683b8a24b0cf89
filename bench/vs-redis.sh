#!/usr/bin/env bash
# Targets 1–3: IAMAT against Redis PING and a bare tokio echo server, same generator, same box.
#   bench/vs-redis.sh            (DURATION=5 seconds a run by default)
source "$(dirname "$0")/common.sh"
build
need_redis
R=$(free_port); E=$(free_port); H=$(free_port); H1=$(free_port)
start_redis "$R"; start_echo "$E"; one_server "$H"; one_server "$H1" --threads 1

run() { # label port args…
  local label=$1 port=$2; shift 2
  local j; j=$(bench "$port" "$@")
  printf '%-34s %10.0f req/s   p99 %8.1f µs  errors %s\n' "$label" "$(field "$j" requests_per_sec)" "$(field "$j" latency_us.p99)" "$(field "$j" errors)" >&2
  echo "$j"
}

for P in 1 16; do
  echo "== 50 connections, pipeline $P" >&2
  redis=$(run "redis-server PING" "$R" -c 50 -P "$P" --raw-line PING)
  echo_=$(run "tokio line echo" "$E" -c 50 -P "$P" --raw-line PING)
  herd=$(run "herd IAMAT (multi-thread)" "$H" -c 50 -P "$P" --clients 1000000)
  herd1=$(run "herd IAMAT (--threads 1)" "$H1" -c 50 -P "$P" --clients 1000000)
  best=$(python3 -c 'import sys; print(max(float(a) for a in sys.argv[1:]))' "$(field "$herd" requests_per_sec)" "$(field "$herd1" requests_per_sec)")
  echo "ratio herd/redis: $(ratio "$best" "$(field "$redis" requests_per_sec)")   herd/echo: $(ratio "$best" "$(field "$echo_" requests_per_sec)")"
done

echo "== 1000 connections, pipeline 1" >&2
redis=$(run "redis-server PING" "$R" -c 1000 --raw-line PING)
herd=$(run "herd IAMAT (multi-thread)" "$H" -c 1000 --clients 1000000)
herd1=$(run "herd IAMAT (--threads 1)" "$H1" -c 1000 --clients 1000000)
best=$(python3 -c 'import sys; print(min(float(a) for a in sys.argv[1:]))' "$(field "$herd" latency_us.p99)" "$(field "$herd1" latency_us.p99)")
echo "1000 conns: herd errors $(field "$herd" errors) / $(field "$herd1" errors), p99 ratio herd/redis: $(ratio "$best" "$(field "$redis" latency_us.p99)")"
