#!/usr/bin/env bash
# Records llama.cpp's greedy token ids on the tiny family models here (families-greedy.json),
# which tests/engine/model/families_test.cpp compares the engine's against token for token.
#
# usage: make-greedy.sh LLAMA_CPP_DIR
#   LLAMA_CPP_DIR  a llama.cpp checkout at the anchor commit (3f545bec) built by
#                  ../shared/peers/build-llama-cpp.sh (static libraries in build/).
# The models come from make_families.py (same directory). llama-completion does not print token
# ids, so greedy_ids.cpp (the library's greedy sampler, n_ctx 256, 2 threads) prints them; the
# text of those ids must equal llama-completion's own output (-c 256 -t 2 --temp 0 --top-k 1),
# which this script checks for every prompt before writing anything.
set -eu
L=${1:?usage: make-greedy.sh LLAMA_CPP_DIR}
DIR=$(cd "$(dirname "$0")" && pwd)
N=32
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
g++ -O2 -std=c++17 -I"$L/include" -I"$L/ggml/include" "$DIR/greedy_ids.cpp" \
  "$L/build/src/libllama.a" "$L/build/ggml/src/libggml.a" "$L/build/ggml/src/libggml-cpu.a" \
  "$L/build/ggml/src/libggml-base.a" -fopenmp -lpthread -ldl -o "$TMP/greedy_ids"
PROMPTS=("Once upon a time" "The quick brown fox"
  "In a hole in the ground there lived a hobbit. Not a nasty, dirty, wet hole, filled with the ends of worms")
{
  printf '{\n  "n_predict": %d,\n  "models": {' "$N"
  msep=""
  for f in llama32-tied gemma2 gemma3 phi3; do
    printf '%s\n    "%s.gguf": [' "$msep" "$f"
    psep=""
    for p in "${PROMPTS[@]}"; do
      "$TMP/greedy_ids" "$DIR/$f.gguf" "$p" "$N" > "$TMP/out"
      prompt_ids=$(sed -n 1p "$TMP/out")
      ids=$(sed -n 2p "$TMP/out")
      hex=$(sed -n 3p "$TMP/out")
      top=$(sed -n 4p "$TMP/out")
      # llama-completion at this commit sometimes exits before its last bytes reach stdout:
      # retry until the closing newlines are there (as ../quantized/make-greedy.sh).
      for try in 1 2 3 4 5 6 7 8; do
        chex=$("$L/build/bin/llama-completion" -m "$DIR/$f.gguf" -p "$p" -n "$N" --temp 0 \
          --top-k 1 -t 2 -c 256 -no-cnv --no-warmup --no-display-prompt 2>/dev/null |
          xxd -p | tr -d '\n')
        [ "${chex%0a0a}" != "$chex" ] && break
      done
      chex=${chex%0a0a}
      [ "$chex" = "$hex" ] || { echo "$f '$p': ids' text $hex != llama-completion's $chex" >&2; exit 1; }
      printf '%s\n      {"prompt": "%s",\n       "prompt_ids": [%s],\n       "ids": [%s],\n       "top_logits": [%s],\n       "text_hex": "%s"}' \
        "$psep" "$p" "${prompt_ids// /, }" "${ids// /, }" "${top// /, }" "$hex"
      psep=","
    done
    printf '\n    ]'
    msep=","
  done
  printf '\n  }\n}\n'
} > "$TMP/greedy.json"
mv "$TMP/greedy.json" "$DIR/families-greedy.json"
cat "$DIR/families-greedy.json"
