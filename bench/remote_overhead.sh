#!/usr/bin/env bash
# Gantry in front of a remote engine vs nginx proxy_pass, side by side (issue 12, "How it is
# judged"). The upstream is nginx answering every chat completion with a fixed OpenAI body
# (`return 200`), so what is measured is the proxy: HTTP in, the upstream call on a kept-alive
# connection, the response out — and for Gantry also auth with a key, rate limits, the budget
# check and the ledger row.
#
#   bench/remote_overhead.sh      # BUILD=build SECONDS_EACH=5 ROUNDS=2 CONNS=64 IO_THREADS=2
#
# Three targets on 127.0.0.1, measured alternately (ROUNDS times):
#   direct — the upstream itself
#   nginx  — nginx proxy_pass to it (upstream keepalive 64)
#   gantry — gantry serve --model bench=http://127.0.0.1:UP/v1, keyed request with limits + budget
#   relay  — bench/tcp_relay: bytes relayed to the upstream, nothing parsed (two threads per
#            connection blocking in recv/send). The floor: what one more loopback hop and its two
#            wake-ups cost on this host, which no proxy can add less than.
# 1. throughput at CONNS connections (fixed_rate far above capacity: achieved req/s);
# 2. latency at one connection and a low rate: p50 over the direct call;
# 3. streamed: time to the first content chunk (bench/stream_load, one client, TTFT_REQUESTS
#    requests, a new connection each, as stream_load does) against a second upstream answering
#    every request with a fixed event stream (three content chunks, a usage chunk, [DONE]):
#    direct, nginx (proxy_buffering off) and Gantry (model bench-stream), p50 over direct.
# Everything (nginx workers, gantry, the load generator) shares the machine's 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECONDS_EACH=${SECONDS_EACH:-5}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-64}
GANTRY=$BUILD/gantry
FIXED=$BUILD/bench/fixed_rate
. bench/remote_upstreams.sh
PROXY=$(free_port)
start_proxy proxy "$PROXY" "$UP"
PROXYS=$(free_port) # the streams' proxy: passes each event on as it comes
start_proxy proxys "$PROXYS" "$UPS" "proxy_buffering off;"
exec {relay_fd}< <(exec "$BUILD/bench/tcp_relay" --upstream "$UP") && pids+=($!)
read -r -u "$relay_fd" RELAY
exec {relays_fd}< <(exec "$BUILD/bench/tcp_relay" --upstream "$UPS") && pids+=($!)
read -r -u "$relays_fd" RELAYS
sleep 0.5
GPORT=$(free_port)
# --no-cache: the streamed requests are greedy (cacheable) and repeat from round to round; what
# is measured is the proxy path, never a cache hit.
GANTRY_ADMIN_TOKEN=$TOKEN "$GANTRY" serve --port "$GPORT" --data-dir "$tmp/gantry" \
  --io-threads "${IO_THREADS:-2}" --no-cache --request-log "$tmp/requests.log" --model "bench=http://127.0.0.1:$UP/v1" --model "bench-stream=http://127.0.0.1:$UPS/v1" \
  >"$tmp/gantry.out" 2>&1 & pids+=($!)
KEY=$(bench_key "$GPORT")
curl -fs "http://127.0.0.1:$GPORT/v1/chat/completions" -H "Authorization: Bearer $KEY" \
  -H 'Content-Type: application/json' -d "$REQ" >/dev/null

run() { # port conns rate [header]
  local extra=()
  [ -n "${4:-}" ] && extra=(--header "$4")
  "$FIXED" --port "$1" --rate "$3" --seconds "$SECONDS_EACH" --connections "$2" --method POST \
    --path /v1/chat/completions --body "$REQ" --header 'Content-Type: application/json' "${extra[@]}"
}
field() { python3 -c "import sys,json; print(json.load(sys.stdin)['$1'])"; }
STREAM=$BUILD/bench/stream_load
TTFT_REQUESTS=${TTFT_REQUESTS:-300}
ttft() { # port model [header]: p50 time to the first content chunk, in microseconds
  local extra=()
  [ -n "${3:-}" ] && extra=(--header "$3")
  "$STREAM" --port "$1" --model "$2" --clients 1 --rounds "$TTFT_REQUESTS" --max-tokens 16 "${extra[@]}" |
    python3 -c "import sys,json; d=json.load(sys.stdin); assert d['errors'] == 0, d; print(round(d['ttft_p50_s'] * 1e6))"
}
rps_n=(); rps_g=(); rps_r=(); p50_d=(); p50_n=(); p50_g=(); p50_r=(); t_d=(); t_n=(); t_g=(); t_r=()
for r in $(seq "$ROUNDS"); do
  n=$(run "$PROXY" "$CONNS" 1000000); g=$(run "$GPORT" "$CONNS" 1000000 "Authorization: Bearer $KEY")
  rl=$(run "$RELAY" "$CONNS" 1000000)
  echo "round $r c=$CONNS nginx : $n"; echo "round $r c=$CONNS gantry: $g"; echo "round $r c=$CONNS relay : $rl"
  rps_n+=($(echo "$n" | field achieved)); rps_g+=($(echo "$g" | field achieved)); rps_r+=($(echo "$rl" | field achieved))
  d=$(run "$UP" 1 300); n=$(run "$PROXY" 1 300); g=$(run "$GPORT" 1 300 "Authorization: Bearer $KEY")
  rl=$(run "$RELAY" 1 300)
  echo "round $r c=1 direct: $d"; echo "round $r c=1 nginx : $n"; echo "round $r c=1 gantry: $g"; echo "round $r c=1 relay : $rl"
  p50_d+=($(echo "$d" | field p50_us)); p50_n+=($(echo "$n" | field p50_us)); p50_g+=($(echo "$g" | field p50_us))
  p50_r+=($(echo "$rl" | field p50_us))
  t_d+=($(ttft "$UPS" up)); t_n+=($(ttft "$PROXYS" up)); t_g+=($(ttft "$GPORT" bench-stream "Authorization: Bearer $KEY"))
  t_r+=($(ttft "$RELAYS" up))
  echo "round $r streamed TTFT p50: direct ${t_d[-1]} us, nginx ${t_n[-1]} us, gantry ${t_g[-1]} us, relay ${t_r[-1]} us"
done
python3 - "${rps_n[*]}" "${rps_g[*]}" "${p50_d[*]}" "${p50_n[*]}" "${p50_g[*]}" "${t_d[*]}" "${t_n[*]}" "${t_g[*]}" \
  "${rps_r[*]}" "${p50_r[*]}" "${t_r[*]}" <<'PY'
import sys, statistics as st
rn, rg, d, n, g, td, tn, tg, rr, r, tr = ([float(x) for x in a.split()] for a in sys.argv[1:12])
m = st.median
print(f"throughput at the connection count: nginx {m(rn):.0f} req/s, gantry {m(rg):.0f} req/s, ratio {m(rg)/m(rn):.2f}x (relay {m(rr):.0f} req/s)")
print(f"p50 at 1 connection: direct {m(d):.0f} us, nginx {m(n):.0f} us (+{m(n)-m(d):.0f}), gantry {m(g):.0f} us (+{m(g)-m(d):.0f}); floor: relay {m(r):.0f} us (+{m(r)-m(d):.0f})")
print(f"streamed TTFT p50 (new connection each): direct {m(td):.0f} us, nginx {m(tn):.0f} us (+{m(tn)-m(td):.0f}), gantry {m(tg):.0f} us (+{m(tg)-m(td):.0f}); floor: relay {m(tr):.0f} us (+{m(tr)-m(td):.0f})")
PY
echo "request log lines: $(grep -c . "$tmp/requests.log" || true)"
