#!/usr/bin/env bash
# Constrained decoding's cost (issue 17: "a constrained request costs at most 1.5x an
# unconstrained one on the bundled model and at most 1.1x on the 1.1B synthetic model"),
# measured side by side in one run: for each model one `gantry serve`, then bench/constrained.py
# alternates a JSON-schema request and a free one (streamed, same max_tokens; greedy, then
# sampled at temperature 1 with a seed) and prints medians and constrained/free ratios per token.
#
#   bench/constrained.sh                  # bundled stories260K and synthetic TinyLlama-1.1B Q8_0
#   SKIP_1B=1 ROUNDS=7 bench/constrained.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
ROUNDS=${ROUNDS:-7}
THREADS=${THREADS:-2}
OUT=bench/out
GANTRY=$BUILD/gantry
mkdir -p "$OUT"

run() { # name model-path tokens
  local tmp port pid
  tmp=$(mktemp -d /tmp/gantry-constrained-XXXXXX)
  "$GANTRY" serve --port 0 --data-dir "$tmp" --threads "$THREADS" --request-log off \
    --model "$1=$2" >"$tmp/stdout" 2>"$tmp/stderr" &
  pid=$!
  for _ in $(seq 600); do
    port=$(sed -n 's/^Gantry listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$tmp/stdout" | head -n1)
    [ -n "$port" ] && curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  for temp in 0 1; do
    python3 bench/constrained.py --port "$port" --model "$1" --rounds "$ROUNDS" --tokens "$3" \
      --temperature "$temp"
  done
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}

echo "# $(date -u '+%Y-%m-%d %H:%M UTC') $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1), $(nproc) cores, commit $(git rev-parse --short HEAD)"
run stories260K models/stories260K.gguf 256
if [ "${SKIP_1B:-0}" != 1 ]; then
  f=$OUT/tinyllama-q8_0.gguf
  if [ ! -s "$f" ]; then
    "$GANTRY" model synth --like tinyllama-1.1b --type q8_0 \
      --vocab tests/data/vocab/ggml-vocab-llama-spm.gguf --out "$f.tmp" >&2
    mv "$f.tmp" "$f"
  fi
  run tinyllama "$f" 48
fi
