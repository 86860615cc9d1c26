#!/usr/bin/env bash
# CPU time per proxied request, Gantry against nginx proxy_pass (issue 12): where the req/s gap at
# 64 connections comes from. Same setup as bench/remote_overhead.sh (nginx upstream answering a
# fixed chat completion, Gantry with a key, limits, a budget and the ledger, --no-cache); each
# target takes SECONDS_EACH seconds of bench/fixed_rate at CONNS connections, ROUNDS times
# alternating. Reads user and system CPU of every thread from /proc before and after, and prints
# microseconds per request for the proxy (Gantry, or the proxying nginx), the upstream nginx and
# the load generator. The proxying nginx's share is all nginx processes minus the upstream's.
#
#   bench/remote_cpu.sh      # BUILD=build SECONDS_EACH=3 ROUNDS=2 CONNS=64 IO_THREADS=2
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECONDS_EACH=${SECONDS_EACH:-3}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-64}
. bench/remote_upstreams.sh
PROXY=$(free_port)
start_proxy proxy "$PROXY" "$UP"
GPORT=$(free_port)
GANTRY_ADMIN_TOKEN=$TOKEN "$BUILD/gantry" serve --port "$GPORT" --data-dir "$tmp/gantry" \
  --io-threads "${IO_THREADS:-2}" --no-cache --request-log "$tmp/requests.log" \
  --model "bench=http://127.0.0.1:$UP/v1" >"$tmp/gantry.out" 2>&1 &
GPID=$!
pids+=($GPID)
KEY=$(bench_key "$GPORT")

# "user system" clock ticks of every thread of the given processes
ticks() {
  local u=0 s=0 p task
  for p in "$@"; do
    for task in /proc/"$p"/task/*; do
      read -r -a f <"$task/stat" || continue
      u=$((u + f[13])) s=$((s + f[14]))
    done
  done
  echo "$u $s"
}
# Each nginx's worker is its master's child; the masters are told apart by their prefix.
UPM=$(pgrep -f "nginx -p $tmp/up " | head -1)
UPW=$(pgrep -P "$UPM" | tr '\n' ' ')
PXM=$(pgrep -f "nginx -p $tmp/proxy " | head -1)
PXW=$(pgrep -P "$PXM" | tr '\n' ' ')
HZ=$(getconf CLK_TCK)
for r in $(seq "$ROUNDS"); do
  for target in nginx gantry; do
    if [ "$target" = nginx ]; then port=$PROXY proxy_pids="$PXW" hdr=(); else port=$GPORT proxy_pids=$GPID hdr=(--header "Authorization: Bearer $KEY"); fi
    read -r pu0 ps0 <<<"$(ticks $proxy_pids)"
    read -r uu0 us0 <<<"$(ticks $UPW)"
    /usr/bin/time -f "%U %S" -o "$tmp/loadgen.time" "$BUILD/bench/fixed_rate" --port "$port" \
      --rate 1000000 --seconds "$SECONDS_EACH" --connections "$CONNS" --method POST \
      --path /v1/chat/completions --body "$REQ" --header 'Content-Type: application/json' \
      "${hdr[@]}" >"$tmp/out.json"
    read -r pu1 ps1 <<<"$(ticks $proxy_pids)"
    read -r uu1 us1 <<<"$(ticks $UPW)"
    python3 - "$target" "$tmp/out.json" "$HZ" "$SECONDS_EACH" $pu0 $ps0 $pu1 $ps1 $uu0 $us0 $uu1 $us1 "$(cat "$tmp/loadgen.time")" <<'PY'
import json, sys
t, f, hz, secs = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
pu0, ps0, pu1, ps1, uu0, us0, uu1, us1 = (int(x) for x in sys.argv[5:13])
lu, ls = (float(x) for x in sys.argv[13].split())
d = json.load(open(f))
n = d["achieved"] * secs
us = lambda ticks: ticks / hz * 1e6 / n
print(f"{t:6s} {d['achieved']:7.0f} req/s | proxy user {us(pu1 - pu0):5.1f} sys {us(ps1 - ps0):5.1f} us/req"
      f" | upstream {us(uu1 - uu0 + us1 - us0):5.1f} | load generator {(lu + ls) * 1e6 / n:5.1f}")
PY
  done
done
