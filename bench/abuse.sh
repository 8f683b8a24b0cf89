#!/usr/bin/env bash
# Abuse soak: 50 honest clients pipelining IAMATs, first alone, then while 8,000 idle connections,
# 2,000 dripping ones (one byte a second, re-connecting when cut off) and a flood of 1,000 connections
# over the limit attack the same server. Reports the honest throughput and p99 of both runs, the server's
# RSS under attack, the refusals it counted, and what the attackers saw.
#   bench/abuse.sh               (DURATION=60 seconds a run by default; loopback only)
DURATION="${DURATION:-60}"
source "$(dirname "$0")/common.sh"
build
ulimit -n "$(ulimit -Hn)"
IDLE=8000 DRIP=2000 FLOOD=1000 HONEST=50 PIPELINE="${PIPELINE:-16}"

# serve PORT: one server whose client slots fit the attackers and the honest clients exactly, so the
# flood is over the limit; default time-outs (line 10 s, idle 300 s). Prints its pid.
serve() {
  printf '[log]\nlines = false\n[limits]\nmax_connections = %s\n[[server]]\nname = "Alford"\nlisten = "127.0.0.1:%s"\n' \
    "$((IDLE + DRIP + HONEST))" "$1" > "$WORK/abuse-$1.toml"
  "$BIN/herd-server" serve Alford --config "$WORK/abuse-$1.toml" --log-dir "$WORK/logs-$1" 2> "$WORK/stderr-$1" &
  PIDS+=($!)
  wait_port "$1"
}

honest() { # PORT → bench JSON
  "$BIN/herd" --to "127.0.0.1:$1" bench --json -d "$DURATION" -c "$HONEST" -P "$PIPELINE" --clients 100000
}

errors() { python3 -c 'import json,sys; print(sum(json.loads(sys.argv[1])["errors"].values()))' "$1"; }

echo "== clean: $HONEST honest connections, pipeline $PIPELINE, ${DURATION}s" >&2
C=$(free_port); serve "$C"; CP=${PIDS[-1]}
clean=$(honest "$C")
kill "$CP"; wait "$CP" 2>/dev/null || true

echo "== under attack: $IDLE idle + $DRIP dripping connections, a flood of $FLOOD over the limit" >&2
A=$(free_port); serve "$A"; AP=${PIDS[-1]}
# The attackers, from their own loopback addresses (drip 127.0.0.2, idle 127.0.0.3, flood 127.0.0.4).
python3 - "$A" "$IDLE" "$DRIP" "$FLOOD" "$((DURATION + 60))" "$WORK/ready" "$WORK/stop" > "$WORK/attack.json" <<'PY' &
import asyncio, json, os, resource, sys, time
port, n_idle, n_drip, n_flood, secs, ready, stop = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6], sys.argv[7]
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
end = time.monotonic() + secs  # a hard bound; the script says stop much earlier
s = dict(idle_tried=0, idle_open=0, idle_cut=0, drip_conns=0, drip_cut=0, drip_busy=0, connect_errors=0,
         flood_busy=0, flood_other=0, flood_busy_max_ms=0.0, flood_busy_lines=[])

async def connect(src):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0))

async def idle(holding):
    try:
        r, w = await connect("127.0.0.3")
    except OSError:
        s["idle_tried"] += 1
        s["connect_errors"] += 1
        return
    s["idle_tried"] += 1
    s["idle_open"] += 1
    holding.append(w)
    data = await r.read(100)  # held until the server closes it or the run ends
    if time.monotonic() < end:
        s["idle_cut"] += 1

async def drip(delay):
    await asyncio.sleep(delay)
    while time.monotonic() < end:
        try:
            r, w = await connect("127.0.0.2")
        except OSError:
            s["connect_errors"] += 1
            await asyncio.sleep(1)
            continue
        s["drip_conns"] += 1
        reader = asyncio.ensure_future(r.read(100))
        while not reader.done() and time.monotonic() < end:
            try:
                w.write(b"I")
                await w.drain()
            except OSError:
                break
            await asyncio.wait([reader], timeout=1)
        if reader.done():
            s["drip_cut"] += 1
            try:
                if reader.result().startswith(b"? busy"):
                    s["drip_busy"] += 1
            except OSError:
                pass
        else:
            reader.cancel()
        w.close()

async def flood_one():
    t0 = time.monotonic()
    try:
        r, w = await connect("127.0.0.4")
        line = await asyncio.wait_for(r.readline(), 5)
    except (OSError, asyncio.TimeoutError):
        s["flood_other"] += 1
        return
    if line.startswith(b"? busy"):
        s["flood_busy"] += 1
        s["flood_busy_max_ms"] = max(s["flood_busy_max_ms"], (time.monotonic() - t0) * 1000)
        text = line.decode(errors="replace").strip()
        if text not in s["flood_busy_lines"]:
            s["flood_busy_lines"].append(text)
    else:
        s["flood_other"] += 1
    w.close()

async def main():
    global end
    holding, tasks = [], []
    for i in range(0, n_idle, 500):  # in batches: the accept queue is deep, not endless
        batch = [asyncio.ensure_future(idle(holding)) for _ in range(min(500, n_idle - i))]
        tasks += batch
        while s["idle_tried"] < min(i + 500, n_idle) and time.monotonic() < end:
            await asyncio.sleep(0.01)
    tasks += [asyncio.ensure_future(drip(i / n_drip)) for i in range(n_drip)]
    while s["drip_conns"] < n_drip and time.monotonic() < end:
        await asyncio.sleep(0.01)
    open(ready, "w").close()
    await asyncio.sleep(5)  # the honest clients connect
    for i in range(0, n_flood, 100):
        await asyncio.gather(*(flood_one() for _ in range(min(100, n_flood - i))))
    while not os.path.exists(stop) and time.monotonic() < end:
        await asyncio.sleep(0.1)
    end = time.monotonic()  # what the server cuts from here on is not counted
    for w in holding:
        w.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

t0 = time.monotonic()
asyncio.run(main())
u = resource.getrusage(resource.RUSAGE_SELF)
s["attacker_cpu_pct_of_one_core"] = round(100 * (u.ru_utime + u.ru_stime) / (time.monotonic() - t0), 1)
print(json.dumps(s))
PY
ATTACK=$!
for _ in $(seq 1 1200); do [ -e "$WORK/ready" ] && break; sleep 0.05; done
[ -e "$WORK/ready" ] || { echo "the attackers never got their connections" >&2; exit 1; }
echo "attackers connected; server RSS $(( $(rss_kb "$AP") / 1024 )) MB" >&2
echo 0 > "$WORK/peak"
( peak=0; while kill -0 "$AP" 2>/dev/null; do r=$(rss_kb "$AP" 2>/dev/null || echo 0); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" > "$WORK/peak"; sleep 1; done ) &
SAMPLER=$!
attacked=$(honest "$A")
touch "$WORK/stop"
wait "$ATTACK" || true
kill "$AP"; wait "$AP" 2>/dev/null || true
kill "$SAMPLER" 2>/dev/null || true

printf '%-22s %12s %10s %8s\n' run 'req/s' 'p99 ms' errors
for run in clean attacked; do
  j=${!run}
  printf '%-22s %12.0f %10.2f %8s\n' "$run" "$(field "$j" requests_per_sec)" \
    "$(python3 -c 'import sys; print(float(sys.argv[1]) / 1000)' "$(field "$j" latency_us.p99)")" "$(errors "$j")"
done
echo "honest throughput under attack / clean: $(ratio "$(field "$attacked" requests_per_sec)" "$(field "$clean" requests_per_sec)")"
echo "server peak RSS under attack: $(( $(cat "$WORK/peak") / 1024 )) MB"
echo "server's count: $(grep -o 'refused: .*)' "$WORK/stderr-$A" | tr -d ')')"
echo "attackers saw: $(cat "$WORK/attack.json")"
