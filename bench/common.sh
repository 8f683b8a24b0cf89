# Shared helpers for the benchmark scripts: build, free ports, start and stop servers, read results.
# Everything listens on 127.0.0.1 and every server started here is stopped on exit.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release"
WORK="$(mktemp -d -t herd-bench.XXXXXX)"
PIDS=()
DURATION="${DURATION:-5}"

cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

build() {
  (cd "$ROOT" && cargo build --release -q -p herd-server -p herd-cli --bins --examples)
}

# free_port: a port nothing listens on. PORT_BASE=N hands out N, N+1, … instead of ports the kernel picks.
free_port() {
  if [ -n "${PORT_BASE:-}" ]; then
    local n; n=$(cat "$WORK/next-port" 2>/dev/null || echo "$PORT_BASE")
    echo $((n + 1)) > "$WORK/next-port"
    echo "$n"
    return
  fi
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  return 1
}

need_redis() {
  if ! command -v redis-server >/dev/null; then
    echo "installing redis-server (Debian package) for the comparison" >&2
    (apt-get update -qq && apt-get install -y -qq redis-server redis-tools) >/dev/null
  fi
}

# start_redis PORT
start_redis() {
  redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >/dev/null &
  PIDS+=($!)
  wait_port "$1"
}

# start_echo PORT
start_echo() {
  "$BIN/examples/line_echo" "127.0.0.1:$1" >/dev/null 2>&1 &
  PIDS+=($!)
  wait_port "$1"
}

# one_server PORT [extra herd-server args…]: a lone herd server, line logging off (SERVER=binary: another
# build than this tree's).
one_server() {
  local port=$1; shift
  printf '[log]\nlines = false\n[[server]]\nname = "Alford"\nlisten = "127.0.0.1:%s"\n' "$port" > "$WORK/one-$port.toml"
  "${SERVER:-$BIN/herd-server}" serve Alford --config "$WORK/one-$port.toml" --log-dir "$WORK/logs" "$@" 2>/dev/null &
  PIDS+=($!)
  wait_port "$port"
}

# logged_server PORT [extra herd-server args…]: a lone herd server logging every line (the default), its
# log in $WORK/logs-PORT/Alford.log. LOG_TOML adds to its [log] table (e.g. `max_bytes = 0`).
logged_server() {
  local port=$1; shift
  printf '[log]\n%s\n[[server]]\nname = "Alford"\nlisten = "127.0.0.1:%s"\n' "${LOG_TOML:-}" "$port" > "$WORK/logged-$port.toml"
  "${SERVER:-$BIN/herd-server}" serve Alford --config "$WORK/logged-$port.toml" --log-dir "$WORK/logs-$port" "$@" 2>/dev/null &
  PIDS+=($!)
  wait_port "$port"
}

# start_redis_aof PORT: Redis writing every update to its append-only file, fsync once a second.
start_redis_aof() {
  mkdir -p "$WORK/redis-$1"
  redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec \
    --dir "$WORK/redis-$1" --daemonize no >/dev/null &
  PIDS+=($!)
  wait_port "$1"
}

# bench TARGET_PORT ARGS…: runs herd bench --json, prints the JSON line.
bench() {
  local port=$1; shift
  "$BIN/herd" --to "127.0.0.1:$port" bench --json -d "$DURATION" "$@"
}

# field JSON PATH: a number from bench JSON (PATH like requests_per_sec or latency_us.p99)
field() {
  python3 -c 'import json,sys; v=json.loads(sys.argv[1]);
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$1" "$2"
}

ratio() {
  python3 -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f"{a/b:.2f}" if b else "n/a")' "$1" "$2"
}

# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks (getconf CLK_TCK a second).
cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat"
}

rss_kb() {
  awk '/VmRSS/ {print $2}' "/proc/$1/status"
}
