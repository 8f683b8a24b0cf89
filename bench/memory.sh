#!/usr/bin/env bash
# Target 6 and the catch-up figure: RSS with 1M distinct clients; RSS with 10,000 idle client
# connections; time for a restarted neighbour to catch up on 1M records.
source "$(dirname "$0")/common.sh"
build
A=$(free_port); B=$(free_port)
printf '[log]\nlines = false\n[[server]]\nname = "Alford"\nlisten = "127.0.0.1:%s"\nneighbors = ["Hamilton"]\n[[server]]\nname = "Hamilton"\nlisten = "127.0.0.1:%s"\n' "$A" "$B" > "$WORK/two.toml"
"$BIN/herd-server" serve Alford --config "$WORK/two.toml" --log-dir "$WORK/logs" 2>/dev/null &
AP=$!; PIDS+=($AP)
wait_port "$A"
echo "Alford RSS at start: $(( $(rss_kb $AP) / 1024 )) MB"
"$BIN/herd" --to "127.0.0.1:$A" bench -n 1000000 --clients 1000000 -c 10 -P 16 | sed -n 2p
echo "Alford RSS with $( "$BIN/herd" --to "127.0.0.1:$A" send "WHATSAT bench-1 1 0" >/dev/null; echo 1M) clients: $(( $(rss_kb $AP) / 1024 )) MB"
"$BIN/herd-server" serve Hamilton --config "$WORK/two.toml" --log-dir "$WORK/logs" 2>/dev/null &
HP=$!; PIDS+=($HP)
for _ in $(seq 1 600); do grep -q "catch-up from peer complete" "$WORK/logs/Hamilton.log" 2>/dev/null && break; sleep 0.1; done
grep -E "peer link up|catch-up from peer complete" "$WORK/logs/Hamilton.log"
python3 - "$WORK/logs/Hamilton.log" <<'PY'
import re, sys, datetime
t = {}
for line in open(sys.argv[1]):
    for key in ("peer link up", "catch-up from peer complete"):
        if key in line and key not in t:
            t[key] = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
if len(t) == 2:
    print(f"catch-up: {(t['catch-up from peer complete'] - t['peer link up']).total_seconds():.2f} s")
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
