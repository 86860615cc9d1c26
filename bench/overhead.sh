#!/usr/bin/env bash
# Request-path overhead of the control plane (issue 4) and of metrics + request logging
# (issue 6), measured on the cheapest inference path there is: a response-cache hit on the
# bundled model (no engine work), so what remains is HTTP + JSON + Gantry's own bookkeeping.
#
#   bench/overhead.sh        # BUILD=build SECONDS_EACH=8 RATE=5000 ROUNDS=2
#
# Three servers run side by side and are measured alternately (ROUNDS times), so drift on the
# shared machine hits all of them alike:
#   open    — no API keys (auth skipped), metrics on, request log to a file
#   keyed   — a key with RPM/TPM limits and a project budget: auth + limits + quota + ledger
#   bare    — --no-metrics --request-log off
# 1. fixed_rate at RATE req/s: median latency open vs keyed → the added cost of the control
#    plane on the request path;
# 2. wrk -t2 -c16: throughput open vs bare → the cost of metrics + logging.
# Prints the raw lines and the medians. wrk and fixed_rate share the 2 cores with the servers.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECONDS_EACH=${SECONDS_EACH:-8}
RATE=${RATE:-5000}
ROUNDS=${ROUNDS:-2}
GANTRY=$BUILD/gantry
FIXED=$BUILD/bench/fixed_rate
BODY=$(cat bench/cache_hit.json)
tmp=$(mktemp -d /tmp/gantry-overhead-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # name extra-args...
  local name=$1 port
  shift
  port=$(free_port)
  GANTRY_ADMIN_TOKEN=bench-admin-token-0123456789abcdef "$GANTRY" serve --port "$port" --data-dir "$tmp/$name" \
    --threads 1 --io-threads 2 "$@" >"$tmp/$name.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  echo "$port"
}
OPEN=$(start open --request-log "$tmp/open.log")
KEYED=$(start keyed --request-log "$tmp/keyed.log")
BARE=$(start bare --no-metrics --request-log off)
KEY=$(curl -fs -X POST "http://127.0.0.1:$KEYED/admin/v1/keys" -H 'Authorization: Bearer bench-admin-token-0123456789abcdef' \
  -d '{"project":"bench","rpm":100000000,"tpm":100000000000}' | python3 -c 'import sys,json; print(json.load(sys.stdin)["key"])')
curl -fs -X POST "http://127.0.0.1:$KEYED/admin/v1/budgets" -H 'Authorization: Bearer bench-admin-token-0123456789abcdef' \
  -d '{"owner_kind":"project","owner_id":"bench","period":"month","token_quota":1000000000000}' >/dev/null
sleep 0.5 # the key watcher's poll
prime() { curl -fs "http://127.0.0.1:$1/v1/chat/completions" -H 'Content-Type: application/json' "${@:2}" -d "$BODY" >/dev/null; }
prime "$OPEN"; prime "$BARE"; prime "$KEYED" -H "Authorization: Bearer $KEY"

p50s_open=(); p50s_keyed=(); rps_open=(); rps_bare=()
for r in $(seq "$ROUNDS"); do
  o=$("$FIXED" --port "$OPEN" --rate "$RATE" --seconds "$SECONDS_EACH" --connections 8 \
    --method POST --path /v1/chat/completions --body "$BODY")
  k=$("$FIXED" --port "$KEYED" --rate "$RATE" --seconds "$SECONDS_EACH" --connections 8 \
    --method POST --path /v1/chat/completions --body "$BODY" --header "Authorization: Bearer $KEY")
  echo "round $r open : $o"
  echo "round $r keyed: $k"
  p50s_open+=($(echo "$o" | python3 -c 'import sys,json; print(json.load(sys.stdin)["p50_us"])'))
  p50s_keyed+=($(echo "$k" | python3 -c 'import sys,json; print(json.load(sys.stdin)["p50_us"])'))
  for which in open bare; do
    port=$OPEN; [ $which = bare ] && port=$BARE
    line=$(wrk -t2 -c16 -d"${SECONDS_EACH}s" -s bench/cache_hit.lua "http://127.0.0.1:$port/v1/chat/completions" | grep Requests/sec)
    echo "round $r wrk $which: $line"
    v=$(echo "$line" | awk '{print $2}')
    if [ $which = open ]; then rps_open+=("$v"); else rps_bare+=("$v"); fi
  done
done
python3 - "${p50s_open[*]}" "${p50s_keyed[*]}" "${rps_open[*]}" "${rps_bare[*]}" <<'PY'
import sys, statistics as st
o, k, ro, rb = ([float(x) for x in a.split()] for a in sys.argv[1:5])
print(f"control plane: p50 open {st.median(o):.1f} us, keyed {st.median(k):.1f} us, added {st.median(k)-st.median(o):+.1f} us at the median")
print(f"metrics+log: wrk open {st.median(ro):.0f} req/s, bare {st.median(rb):.0f} req/s, ratio {st.median(ro)/st.median(rb):.3f}")
PY
cat "$tmp"/open.log* | grep -c . | sed 's/^/request log lines (open): /'
