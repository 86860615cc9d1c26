#!/usr/bin/env bash
# Response-cache hit serving: latency and throughput of a chat completion answered from the
# cache (the engine never runs), on the bundled model.
#
#   bench/cache_hit.sh            # BUILD=build SECONDS_EACH=10
#
# 1. starts `gantry serve` (2 I/O threads) and primes the cache with one request;
# 2. latency: wrk with 1 connection (median = the cost of one hit, not queueing);
# 3. throughput: wrk -t2 -c64 (64 keep-alive connections);
# 4. checks /metrics: every request of both runs must have been a hit.
# wrk shares the 2 cores with the server, so the throughput is a lower bound.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECONDS_EACH=${SECONDS_EACH:-10}
GANTRY=$BUILD/gantry
LUA=bench/cache_hit.lua

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tmp=$(mktemp -d /tmp/gantry-cache-bench-XXXXXX)
"$GANTRY" serve --port "$PORT" --data-dir "$tmp" --threads 1 --io-threads 2 >"$tmp/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 300); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
url="http://127.0.0.1:$PORT/v1/chat/completions"
first=$(curl -fs -D - -o /dev/null "$url" -H 'Content-Type: application/json' -d @bench/cache_hit.json |
  tr -d '\r' | sed -n 's/^x-gantry-cache: //p')
second=$(curl -fs -D - -o /dev/null "$url" -H 'Content-Type: application/json' -d @bench/cache_hit.json |
  tr -d '\r' | sed -n 's/^x-gantry-cache: //p')
[[ $first == miss && $second == hit ]] || { echo "priming failed: $first/$second" >&2; exit 1; }

echo "== latency: wrk -t1 -c1 -d${SECONDS_EACH}s --latency -s $LUA"
wrk -t1 -c1 -d"${SECONDS_EACH}s" --latency -s "$LUA" "$url"
echo "== throughput: wrk -t2 -c64 -d${SECONDS_EACH}s --latency -s $LUA"
wrk -t2 -c64 -d"${SECONDS_EACH}s" --latency -s "$LUA" "$url"
echo "== /metrics"
curl -fs "http://127.0.0.1:$PORT/metrics" | grep -E '^gantry:cache_(hits|misses|bypass)_total\{cache="response"\}|^gantry:generation_tokens_total|^gantry:http_requests_total'
