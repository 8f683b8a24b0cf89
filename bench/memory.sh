#!/usr/bin/env bash
# Target 6 and the catch-up figure: RSS with 1M distinct clients; RSS with 10,000 idle client
# connections; time for a restarted neighbour to catch up on 1M records. Then Redis 7 holding the same
# number of AT lines of the same shape (`SET bench-N <line>`), for the bytes a client beside it.
# SERVER=path/to/herd-server measures another build; REDIS=0 skips Redis.
source "$(dirname "$0")/common.sh"
build
SERVER="${SERVER:-$BIN/herd-server}"
A=$(free_port); B=$(free_port)
printf '[log]\nlines = false\n[[server]]\nname = "Alford"\nlisten = "127.0.0.1:%s"\nneighbors = ["Hamilton"]\n[[server]]\nname = "Hamilton"\nlisten = "127.0.0.1:%s"\n' "$A" "$B" > "$WORK/two.toml"
"$SERVER" serve Alford --config "$WORK/two.toml" --log-dir "$WORK/logs" 2>/dev/null &
AP=$!; PIDS+=($AP)
wait_port "$A"
# The empty server's figure is taken once its offline Places index is built (beside the start, in a
# thread of its own; the first WHATSAT waits for it), so the index is not counted against the clients.
"$BIN/herd" --to "127.0.0.1:$A" send "IAMAT empty-probe +0+0 1" >/dev/null
"$BIN/herd" --to "127.0.0.1:$A" send "WHATSAT empty-probe 1 1" >/dev/null
A0=$(rss_kb $AP)
echo "Alford RSS at start: $(( A0 / 1024 )) MB"
"$BIN/herd" --to "127.0.0.1:$A" bench -n 1000000 --clients 1000000 -c 10 -P 16 | sed -n 2p
A1=$(rss_kb $AP)
echo "Alford RSS with $( "$BIN/herd" --to "127.0.0.1:$A" send "WHATSAT bench-1 1 0" >/dev/null; echo 1M) clients: $(( A1 / 1024 )) MB: $(( A1 * 1024 / 1000000 )) B a client of RSS, $(( (A1 - A0) * 1024 / 1000000 )) B a client above the empty server"
"$BIN/herd" --to "127.0.0.1:$A" send "WHATSAT bench-1 1 0" | head -1 | awk '{print "an AT line held: " length($0) " bytes: " $0}'
"$SERVER" serve Hamilton --config "$WORK/two.toml" --log-dir "$WORK/logs" 2>/dev/null &
HP=$!; PIDS+=($HP)
# The catch-up runs from Hamilton's `peer link up` to its link-up reconciliation's report (the event
# the driver logs when a reconciliation that was not a periodic check ends).
UP="peer link up"; DONE="caught up with peer by reconciliation"
for _ in $(seq 1 600); do grep -q "$DONE" "$WORK/logs/Hamilton.log" 2>/dev/null && break; sleep 0.1; done
grep -E "$UP|$DONE" "$WORK/logs/Hamilton.log"
python3 - "$WORK/logs/Hamilton.log" "$UP" "$DONE" <<'PY'
import sys, datetime
path, up, done = sys.argv[1:4]
t = {}
for line in open(path):
    for key in (up, done):
        if key in line and key not in t:
            t[key] = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
if len(t) == 2:
    print(f"catch-up: {(t[done] - t[up]).total_seconds():.2f} s")
else:
    print(f"catch-up: not seen in 60 s (found: {sorted(t)})")
PY
echo "Hamilton RSS after catch-up: $(( $(rss_kb $HP) / 1024 )) MB"

echo "== 10,000 idle client connections"
I=$(free_port); one_server "$I"
IP=${PIDS[-1]}
before=$(rss_kb "$IP")
python3 - "$I" "$IP" <<'PY' &
import socket, sys, time, resource
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
socks = []
for _ in range(10000):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    socks.append(s)
s.sendall(b"IAMAT idle +1+1 1\n"); s.recv(100)  # the last one is served: all were accepted
time.sleep(4)
PY
HOLD=$!
sleep 3
echo "RSS: $(( before / 1024 )) MB idle server, $(( $(rss_kb "$IP") / 1024 )) MB with 10,000 connections"
wait $HOLD

[ "${REDIS:-1}" = 0 ] && exit 0
echo "== Redis: 1M SETs of AT lines of the same shape"
need_redis
R=$(free_port); start_redis "$R"; RP=${PIDS[-1]}
R0=$(rss_kb "$RP")
python3 - <<'PY' | redis-cli -p "$R" --pipe | tail -1
import sys, random
rnd = random.Random(1)
out = sys.stdout.buffer
for i in range(1000000):
    lat = rnd.randint(-560000, 720000); lon = rnd.randint(-1800000, 1800000)
    deg = lambda v: (b"-" if v < 0 else b"+") + b"%d.%04d" % (abs(v) // 10000, abs(v) % 10000)
    key = b"bench-%d" % i
    line = b"AT Alford +0.%09d " % rnd.randint(0, 999999999) + key + b" " + deg(lat) + deg(lon) + b" 1764740000.123456789"
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(line), line))
PY
R1=$(rss_kb "$RP")
echo "Redis RSS with $(redis-cli -p "$R" dbsize) keys: $(( R1 / 1024 )) MB: $(( R1 * 1024 / 1000000 )) B a key of RSS, $(( (R1 - R0) * 1024 / 1000000 )) B a key above the empty server; $(redis-cli -p "$R" get bench-1 | awk '{print "a value: " length($0) " bytes"}')"
