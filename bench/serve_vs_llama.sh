#!/usr/bin/env bash
# Serving side by side (issue 16: "serving 8 concurrent streams stays ahead of llama-server -np 8
# on aggregate tokens/s and TTFT"): `gantry serve` and `llama-server -np CLIENTS` on the same GGUF
# file and threads, alternately per round, each loaded by bench/stream_load (CLIENTS streaming
# chat clients, ROUNDS requests each, TOKENS tokens per request). Prints stream_load's JSON line
# per server and round (agg_tokens_per_s, ttft_p50_s, ...).
#
#   bench/serve_vs_llama.sh MODEL.gguf      # CLIENTS=8 ROUNDS=2 TOKENS=64 THREADS=2 PASSES=2
#
# GANTRY_PEER_DIR (or LLAMA_CPP_DIR): llama.cpp checkout with build/bin/llama-server (default
# ../peers/llama.cpp, relative to the repository; ../shared/peers/build-llama-cpp.sh builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
M=${1:?usage: bench/serve_vs_llama.sh MODEL.gguf}
BUILD=${BUILD:-build}
CLIENTS=${CLIENTS:-8}
ROUNDS=${ROUNDS:-2}
TOKENS=${TOKENS:-64}
THREADS=${THREADS:-2}
PASSES=${PASSES:-2}
PEER_DIR=${GANTRY_PEER_DIR:-${LLAMA_CPP_DIR:-../peers/llama.cpp}}
L=$PEER_DIR/build/bin/llama-server
[[ -x $L ]] || { echo "serve_vs_llama: no $L (build it with ../shared/peers/build-llama-cpp.sh)" >&2; exit 3; }
tmp=$(mktemp -d /tmp/gantry-serve-vs-llama-XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$tmp"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1200); do curl -fs "http://127.0.0.1:$1$2" >/dev/null 2>&1 && return 0; sleep 0.2; done; return 1; }
load() { "$BUILD/bench/stream_load" --port "$1" --model tiny --clients "$CLIENTS" --rounds "$ROUNDS" \
  --max-tokens "$TOKENS" 2>&1 | tail -1; }
for pass in $(seq "$PASSES"); do
  p=$(free_port)
  "$BUILD/gantry" serve --port "$p" --data-dir "$tmp/data-$pass" --model "tiny=$M" \
    --threads "$THREADS" --max-seqs $((2 * CLIENTS)) >"$tmp/gantry-$pass.log" 2>&1 &
  gp=$!; pids+=($gp)
  wait_up "$p" /healthz; sleep 1
  echo "gantry pass $pass: $(load "$p")"
  kill "$gp"; wait "$gp" 2>/dev/null || true
  p=$(free_port)
  "$L" -m "$M" -np "$CLIENTS" -t "$THREADS" --host 127.0.0.1 --port "$p" -c $((1024 * CLIENTS)) \
    >"$tmp/llama-$pass.log" 2>&1 &
  lp=$!; pids+=($lp)
  wait_up "$p" /health; sleep 1
  echo "llama-server pass $pass: $(load "$p")"
  kill "$lp"; wait "$lp" 2>/dev/null || true
done
