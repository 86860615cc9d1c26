#!/usr/bin/env bash
# Instructions Gantry executes per proxied request (issue 12), counted by valgrind's callgrind:
# unlike wall time on the shared 2-core machine, the count repeats to within a few per cent, so a
# change to the request path can be judged by it alone. Gantry serves two remote models from
# nginx upstreams on 127.0.0.1 (a fixed chat completion; a fixed event stream), with a key, its
# limits, a budget and the ledger, the response cache off (--no-cache: the proxy path, never a
# hit). Each case warms up, then counts REQUESTS requests:
#   streamed — bench/stream_load, one client, a new connection per request;
#   whole    — a non-streamed request at a time on one kept-alive connection.
# Prints instructions per request on the I/O threads (the request path) and on all threads.
#
#   bench/remote_instructions.sh      # BUILD=build REQUESTS=200
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
REQUESTS=${REQUESTS:-200}
command -v valgrind >/dev/null || { echo "remote_instructions: valgrind is not installed" >&2; exit 1; }
. bench/remote_upstreams.sh
sleep 0.3

# count CASE: starts Gantry under callgrind (instrumentation off until the warm-up is done),
# runs the case, prints "CASE io=<per request on I/O threads> all=<per request, all threads>".
count() {
  local case=$1 port out
  port=$(free_port)
  out="$tmp/cg-$case"
  GANTRY_ADMIN_TOKEN=$TOKEN valgrind --tool=callgrind --callgrind-out-file="$out" \
    --instr-atstart=no --separate-threads=yes "$BUILD/gantry" serve --port "$port" \
    --data-dir "$tmp/data-$case" --io-threads 2 --no-cache --request-log "$tmp/requests-$case.log" \
    --model "bench=http://127.0.0.1:$UP/v1" --model "bench-stream=http://127.0.0.1:$UPS/v1" \
    >"$tmp/gantry-$case.out" 2>&1 &
  local pid=$!
  pids+=($pid)
  local key
  key=$(bench_key "$port")
  run_case() { # requests -> how many were made
    if [ "$case" = streamed ]; then
      "$BUILD/bench/stream_load" --port "$port" --model bench-stream --clients 1 --rounds "$1" \
        --max-tokens 16 --header "Authorization: Bearer $key" >/dev/null
      echo "$1"
    else
      python3 - "$port" "$key" "$1" "$REQ" <<'PY'
import http.client, sys
port, key, n, body = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(n):  # one kept-alive connection, one request at a time
    c.request("POST", "/v1/chat/completions", body,
              {"Content-Type": "application/json", "Authorization": "Bearer " + key})
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
print(n)
PY
    fi
  }
  run_case 50 >/dev/null
  callgrind_control -i on "$pid" >/dev/null 2>&1
  local made
  made=$(run_case "$REQUESTS")
  callgrind_control -d "$pid" >/dev/null 2>&1
  callgrind_control -i off "$pid" >/dev/null 2>&1
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # The I/O threads are those that parsed a request (every request runs on one of them).
  python3 - "$case" "$made" "$out".1-* <<'PY'
import sys
case, n, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
io = total = 0
for f in files:
    text = open(f, errors="replace").read()
    count = int(next(l for l in text.splitlines() if l.startswith("summary:")).split()[1])
    total += count
    if "Connection::parse()" in text:
        io += count
print(f"{case}: {io // n} instructions per request on the I/O threads, {total // n} on all threads ({n} requests)")
PY
}
count streamed
count whole
