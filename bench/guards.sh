#!/usr/bin/env bash
# The guards of issue 26, measured as an attacker would try them:
#   1. Places bill: one connection sends WHATSATs with a new radius each time (every one a cache miss) to a
#      server whose google back-end is a local fake that counts requests: upstream calls a second, against
#      the configured budget ([places] connection_rate, default 2/s, and its burst of 10).
#   2. Admin flood: a server under `ulimit -n 1024`; 18 honest connections sending IAMATs (herd bench), first
#      alone, then while waves of 1,100 idle admin connections come back a second (WAVE=s) after the server
#      closes them: honest p99 of both runs (goal: under the flood ≤ 2× idle).
#   3. Hand-written HTTP left in the server: lines of herd-server's non-test code that spell HTTP syntax
#      (a status line, CRLF framing) instead of leaving it to hyper (goal: none).
#   bench/guards.sh            (DURATION=10 seconds a run by default; loopback only; SKIP=1,3 skips parts)
DURATION="${DURATION:-10}"
source "$(dirname "$0")/common.sh"
build
ulimit -n "$(ulimit -Hn)"

if [[ ",${SKIP:-}," != *,1,* ]]; then
echo "== 1. Places bill: one connection, a new radius each WHATSAT, ${DURATION}s" >&2
FAKE=$(free_port); P=$(free_port)
python3 - "$FAKE" "$WORK/fake-count" <<'PY' &
import http.server, sys, threading
port, out = int(sys.argv[1]), sys.argv[2]
count = 0
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        global count
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with lock:
            count += 1
            open(out, "w").write(str(count))
        body = b'{"places": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
PIDS+=($!)
wait_port "$FAKE"
printf '[log]\nlines = false\n[places]\nbackend = "google"\nurl = "http://127.0.0.1:%s/v1/places:searchNearby"\nkey = "k"\n[[server]]\nname = "Alford"\nlisten = "127.0.0.1:%s"\n' \
  "$FAKE" "$P" > "$WORK/places.toml"
"$BIN/herd-server" serve Alford --config "$WORK/places.toml" --log-dir "$WORK/logs" 2>/dev/null &
PIDS+=($!)
wait_port "$P"
took=$(python3 - "$P" "$DURATION" <<'PY'
import socket, sys, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"IAMAT abuser +34.068930-118.445127 1\n")
buf = b""
while b"\n" not in buf:
    buf += s.recv(4096)
buf = b""
answers = over = 0
i = 0
t0 = time.monotonic()
while time.monotonic() - t0 < secs:
    batch = b"".join(b"WHATSAT abuser %d.%03d 5\n" % (1 + (i + k) // 1000 % 49, (i + k) % 1000) for k in range(100))
    i += 100
    s.sendall(batch)
    want = answers + 100
    while answers < want:
        data = s.recv(1 << 16)
        if not data:
            break
        buf += data
        answers += buf.count(b"\n\n")
        over += buf.count(b'"OVER_QUERY_LIMIT"')
        buf = buf[buf.rfind(b"\n\n") + 2:] if b"\n\n" in buf else buf
took = time.monotonic() - t0
print(f"  {answers} WHATSATs in {took:.1f} s ({answers / took:.0f}/s), {over} answered OVER_QUERY_LIMIT", file=sys.stderr)
print(took)
PY
)
calls=$(cat "$WORK/fake-count" 2>/dev/null || echo 0)
python3 -c 'import sys; c, d = int(sys.argv[1]), float(sys.argv[2]); print(f"upstream calls: {c} in {d:.1f} s = {c / d:.2f}/s (budget: 2/s a connection after a burst of 10, so at most {(10 + 2 * d) / d:.2f}/s over this run)")' "$calls" "$took"
kill "${PIDS[-1]}" "${PIDS[-2]}" 2>/dev/null || true
fi

if [[ ",${SKIP:-}," != *,2,* ]]; then
echo "== 2. Admin flood under ulimit -n 1024: 18 honest connections, ${DURATION}s a run" >&2
C=$(free_port); A=$(free_port)
printf '[log]\nlines = false\n[[server]]\nname = "Alford"\nlisten = "127.0.0.1:%s"\nadmin = "127.0.0.1:%s"\n' "$C" "$A" > "$WORK/flood.toml"
bash -c 'ulimit -n 1024 && exec "$@"' - "$BIN/herd-server" serve Alford --config "$WORK/flood.toml" --log-dir "$WORK/logs-flood" 2>"$WORK/flood-stderr" &
PIDS+=($!)
SP=${PIDS[-1]}
wait_port "$C"
honest() { "$BIN/herd" --to "127.0.0.1:$C" bench --json -d "$DURATION" -c 18 -P 1 --clients 1000; }
idle=$(honest)
python3 - "$A" "$((DURATION + 30))" "$WORK/flood-ready" "$WORK/flood-stop" > "$WORK/flood.json" <<'PY' &
import asyncio, json, os, resource, sys, time
port, secs, ready, stop = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
WAVE = float(os.environ.get("WAVE", "1"))
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
end = time.monotonic() + secs
s = dict(connects=0, closed_by_server=0, errors=0)  # errors: resets that beat the connect
async def hold():
    while time.monotonic() < end and not os.path.exists(stop):
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:  # reset by the server before the connect returned: past the cap
            s["errors"] += 1
            await asyncio.sleep(WAVE)
            continue
        s["connects"] += 1
        try:
            await asyncio.wait_for(r.read(100), timeout=max(0.1, end - time.monotonic()))
            s["closed_by_server"] += 1
        except (asyncio.TimeoutError, OSError):
            pass
        w.close()
        await asyncio.sleep(WAVE)  # the next wave
async def main():
    tasks = [asyncio.ensure_future(hold()) for _ in range(1100)]
    await asyncio.sleep(1)
    open(ready, "w").close()
    while not os.path.exists(stop) and time.monotonic() < end:
        await asyncio.sleep(0.1)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
t0 = time.monotonic()
asyncio.run(main())
u = resource.getrusage(resource.RUSAGE_SELF)
s["attacker_cpu_pct_of_one_core"] = round(100 * (u.ru_utime + u.ru_stime) / (time.monotonic() - t0), 1)
print(json.dumps(s))
PY
FLOOD=$!
for _ in $(seq 1 400); do [ -e "$WORK/flood-ready" ] && break; sleep 0.05; done
flooded=$(honest)
touch "$WORK/flood-stop"
wait "$FLOOD" || true
printf '%-10s %12s %10s %10s %8s\n' run 'req/s' 'p50 ms' 'p99 ms' errors
for run in idle flooded; do
  j=${!run}
  printf '%-10s %12.0f %10.3f %10.3f %8s\n' "$run" "$(field "$j" requests_per_sec)" \
    "$(python3 -c 'import sys; print(float(sys.argv[1]) / 1000)' "$(field "$j" latency_us.p50)")" \
    "$(python3 -c 'import sys; print(float(sys.argv[1]) / 1000)' "$(field "$j" latency_us.p99)")" \
    "$(python3 -c 'import json,sys; print(sum(json.loads(sys.argv[1])["errors"].values()))' "$j")"
done
echo "honest p99 flooded / idle: $(ratio "$(field "$flooded" latency_us.p99)" "$(field "$idle" latency_us.p99)")"
echo "the flood: $(cat "$WORK/flood.json")"
kill "$SP" 2>/dev/null || true
fi

if [[ ",${SKIP:-}," != *,3,* ]]; then
echo "== 3. Hand-written HTTP left in the server" >&2
# Non-test code of herd-server (each file up to its test module), comments left out, that spells HTTP in a
# string: a status or request line, or CRLF framing. REV=<commit> counts that commit's files instead.
left=$(for f in $(git -C "$ROOT" ls-tree -r --name-only "${REV:-HEAD}" herd-server/src | grep '\.rs$'); do
  if [ -n "${REV:-}" ]; then git -C "$ROOT" show "$REV:$f"; else cat "$ROOT/$f"; fi |
    awk -v f="$f" '/^#\[cfg\(test\)\]/ {exit} {print f ":" FNR ": " $0}'
done | grep -vE '^[^:]*:[0-9]+: *//' | grep -E '"[^"]*(HTTP/1\.|\\r\\n)' || true)
echo "lines: $(printf '%s' "$left" | grep -c . || true)"
[ -n "$left" ] && printf '%s\n' "$left"
true
fi

