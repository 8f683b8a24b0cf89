#!/usr/bin/env bash
# What the store promises when things go wrong (issue: the store never destroys a record):
#   1. loading 1M clients: the start's wall time and its peak RSS against the RSS once loaded;
#   2. kill -9 under a pipelined flood with fsync = always, KILLS rounds: acknowledged records lost;
#   3. a disk that fills under everysec (the file-size limit of the running server set to 0 with
#      prlimit): how long acknowledgements go on after it, then room again, kill -9, and every
#      acknowledged record checked on the restarted server.
#   bench/store-honest.sh       (KILLS=20 rounds by default; BIN=folder of release binaries to skip
#                               the build)
source "$(dirname "$0")/common.sh"
if [ -n "${HERD_BIN:-}" ]; then BIN="$HERD_BIN"; else build; fi
KILLS="${KILLS:-20}"

# store_server PORT FSYNC: a lone server keeping its records in $WORK/data-PORT, line logging off.
store_server() {
  local port=$1 fsync=$2
  printf '[log]\nlines = false\n[store]\ndir = "%s"\nfsync = "%s"\n[[server]]\nname = "Alford"\nlisten = "127.0.0.1:%s"\n' \
    "$WORK/data-$port" "$fsync" "$port" > "$WORK/store-$port.toml"
  "$BIN/herd-server" serve Alford --config "$WORK/store-$port.toml" --log-dir "$WORK/logs" 2>>"$WORK/store-$port.err" &
  LAST=$!
  PIDS+=("$LAST")
  wait_port "$port"
}

kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }

echo "== 1M clients: load time, peak and steady RSS" >&2
L=$(free_port); store_server "$L" everysec
"$BIN/herd" --to "127.0.0.1:$L" bench --json -c 50 -P 16 -n 1000000 --clients 1000000 >/dev/null
kill -TERM "$LAST"; wait "$LAST" 2>/dev/null || true
for round in 1 2 3; do
  store_server "$L" everysec
  for _ in $(seq 1 600); do [ "$(grep -ac " loaded" "$WORK/store-$L.err")" -ge $((round + 1)) ] && break; sleep 0.1; done
  sleep 1
  loaded=$(grep -a " loaded" "$WORK/store-$L.err" | tail -1)
  peak=$(kib "$LAST" VmHWM); steady=$(kib "$LAST" VmRSS)
  echo "round $round: $loaded"
  echo "round $round: peak RSS $((peak / 1024)) MiB, RSS once loaded $((steady / 1024)) MiB: peak/steady $(python3 -c "print(f'{$peak/$steady:.2f}')")"
  kill -TERM "$LAST"; wait "$LAST" 2>/dev/null || true
done

echo "== kill -9 under a pipelined flood (4 connections, batches of 100), fsync = always, $KILLS rounds" >&2
lost=0
for i in $(seq 1 "$KILLS"); do
  K=$(free_port); store_server "$K" always
  "$BIN/examples/ack_flood" flood "127.0.0.1:$K" 4 100 "$WORK/acked-$K" 2>/dev/null &
  flood=$!
  sleep 1.5
  kill -9 "$LAST"; wait "$LAST" 2>/dev/null || true
  wait "$flood" || true
  store_server "$K" always
  r=$("$BIN/examples/ack_flood" check "127.0.0.1:$K" "$WORK/acked-$K")
  echo "round $i: $r"
  lost=$((lost + $(echo "$r" | awk '{print $4}')))
  kill -TERM "$LAST"; wait "$LAST" 2>/dev/null || true
done
echo "always, $KILLS rounds of kill -9: $lost acknowledged records lost"

echo "== a disk that fills under everysec" >&2
D=$(free_port); store_server "$D" everysec
"$BIN/examples/ack_flood" flood "127.0.0.1:$D" 4 100 "$WORK/acked-$D" 2>/dev/null &
flood=$!
# A probe beside the flood: one IAMAT every 10 ms on its own connection, the time of each reply.
python3 - "$D" "$WORK/probe-$D" <<'PY' &
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = s.makefile("rb")
with open(sys.argv[2], "w") as out:
    for i in range(3000):
        try:
            s.sendall(b"IAMAT probe +1+1 %d\n" % (i + 1))
            if not f.readline().startswith(b"AT "):
                break
        except OSError:
            break
        out.write("%.3f\n" % time.time()); out.flush()
        time.sleep(0.01)
PY
probe=$!
sleep 1.5
full=$(date +%s.%N)
prlimit --pid "$LAST" --fsize=0:unlimited
wait "$flood" || true
wait "$probe" || true
last=$(tail -1 "$WORK/probe-$D")
echo "the last acknowledgement came $(python3 -c "print(f'{($last-$full)*1000:.0f}')") ms after the disk filled (a probe IAMAT every 10 ms)"
acked=$(wc -l < "$WORK/acked-$D")
prlimit --pid "$LAST" --fsize=unlimited:unlimited
for _ in $(seq 1 100); do grep -aq "persistence works again" "$WORK/store-$D.err" && break; sleep 0.1; done
grep -a "persistence" "$WORK/store-$D.err" | cut -c1-200
sleep 0.1
kill -9 "$LAST"; wait "$LAST" 2>/dev/null || true
store_server "$D" everysec
echo "after room again and kill -9: $("$BIN/examples/ack_flood" check "127.0.0.1:$D" "$WORK/acked-$D") (of $acked acknowledged in all)"
kill -TERM "$LAST"; wait "$LAST" 2>/dev/null || true
