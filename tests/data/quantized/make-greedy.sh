#!/usr/bin/env bash
# Records llama.cpp's greedy continuation of one prompt on each file here (greedy.json), which
# tests/engine/model/quantized_files_test.cpp compares the engine's against.
#
# usage: make-greedy.sh LLAMA_COMPLETION
#   LLAMA_COMPLETION  llama.cpp's llama-completion (commit 3f545bec, as built by
#                     ../shared/peers/build-llama-cpp.sh)
# The files themselves come from llama-quantize: run quantized_files_test with
# GANTRY_UPDATE_QUANT_FILES=1 (see that test's header).
set -eu
BIN=${1:?usage: make-greedy.sh LLAMA_COMPLETION}
DIR=$(cd "$(dirname "$0")" && pwd)
PROMPT="Once upon a time"
N=12
{
  printf '{\n  "prompt": "%s",\n  "n_predict": %d,\n  "files": {' "$PROMPT" "$N"
  sep=""
  for f in "$DIR"/*.gguf; do
    # stdout is the generated text only (--no-display-prompt) followed by the two newlines
    # llama-completion prints when it stops; the bytes are kept as hex (byte-fallback tokens
    # produce bytes that are not UTF-8).
    # llama-completion at this commit sometimes exits before its last bytes reach stdout (rc 0):
    # retry until the closing newlines are there.
    for try in 1 2 3 4 5 6 7 8; do
      hex=$("$BIN" -m "$f" -p "$PROMPT" -n "$N" --temp 0 --top-k 1 -t 2 -c 256 -no-cnv \
        --no-warmup --no-display-prompt 2>/dev/null | xxd -p | tr -d '\n')
      [ "${hex%0a0a}" != "$hex" ] && break
    done
    [ "${hex%0a0a}" != "$hex" ] || { echo "no complete output for $f" >&2; exit 1; }
    hex=${hex%0a0a}
    printf '%s\n    "%s": "%s"' "$sep" "$(basename "$f")" "$hex"
    sep=","
  done
  printf '\n  }\n}\n'
} > "$DIR/greedy.json"
cat "$DIR/greedy.json"
