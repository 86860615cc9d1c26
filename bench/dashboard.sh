#!/usr/bin/env bash
# The cost of an open /dashboard on the request path (issue 15): one server, measured alternately
# with and without a dashboard polling it (ROUNDS times, so drift on the shared machine hits both
# alike). The poller asks for the whole hour every 1.5 s (no ?since=: the worst case; the real
# page asks only for new points). The sampler thread runs in both phases (it is always on).
# Traffic: fixed_rate at RATE req/s on the cheapest path (a response-cache hit, no engine work).
#
#   bench/dashboard.sh        # BUILD=build SECONDS_EACH=8 RATE=3000 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECONDS_EACH=${SECONDS_EACH:-8}
RATE=${RATE:-3000}
ROUNDS=${ROUNDS:-3}
BODY=$(cat bench/cache_hit.json)
tmp=$(mktemp -d /tmp/gantry-dash-bench-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
GANTRY_ADMIN_TOKEN=bench-admin-token-0123456789abcdef "$BUILD/gantry" serve --port "$port" --data-dir "$tmp/data" \
  --threads 1 --io-threads 2 --request-log off >"$tmp/out" 2>&1 &
pids+=($!)
for _ in $(seq 300); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' -d "$BODY" >/dev/null
sleep 3 # a few samples in the ring
measure() {
  "$BUILD/bench/fixed_rate" --port "$port" --rate "$RATE" --seconds "$SECONDS_EACH" \
    --connections 8 --method POST --path /v1/chat/completions --body "$BODY"
}
p50_off=(); p99_off=(); p50_on=(); p99_on=()
for r in $(seq "$ROUNDS"); do
  off=$(measure)
  (while :; do
    curl -fs -H 'Authorization: Bearer bench-admin-token-0123456789abcdef' "http://127.0.0.1:$port/admin/v1/dashboard" -o /dev/null
    sleep 1.5
  done) &
  poller=$!
  on=$(measure)
  kill "$poller"; wait "$poller" 2>/dev/null || true
  echo "round $r without dashboard: $off"
  echo "round $r with dashboard   : $on"
  p50_off+=($(echo "$off" | python3 -c 'import sys,json; print(json.load(sys.stdin)["p50_us"])'))
  p99_off+=($(echo "$off" | python3 -c 'import sys,json; print(json.load(sys.stdin)["p99_us"])'))
  p50_on+=($(echo "$on" | python3 -c 'import sys,json; print(json.load(sys.stdin)["p50_us"])'))
  p99_on+=($(echo "$on" | python3 -c 'import sys,json; print(json.load(sys.stdin)["p99_us"])'))
done
size=$(curl -fs -H 'Authorization: Bearer bench-admin-token-0123456789abcdef' "http://127.0.0.1:$port/admin/v1/dashboard" | wc -c)
python3 - "${p50_off[*]}" "${p50_on[*]}" "${p99_off[*]}" "${p99_on[*]}" "$size" <<'PY'
import sys, statistics as st
a, b, c, d = ([float(x) for x in s.split()] for s in sys.argv[1:5])
print(f"dashboard open: p50 {st.median(a):.1f} -> {st.median(b):.1f} us, p99 {st.median(c):.1f} -> {st.median(d):.1f} us (medians of rounds); full poll {sys.argv[5]} bytes")
PY
