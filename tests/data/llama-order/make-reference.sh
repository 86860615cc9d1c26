#!/usr/bin/env bash
# Records reference.json: llama.cpp's greedy ids and log-probabilities on llama-hd64-f32.gguf
# for three prompts, with its native build (AVX-512 here: build/) and with an AVX2 build of the
# same commit (build-avx2/, configured -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON
# -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF, target ggml-cpu).
#   tests/data/llama-order/make-reference.sh LLAMA_CPP_DIR
set -euo pipefail
L=$1
D=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
g++ -O2 -std=c++17 "$D/record.cpp" -I"$L/include" -I"$L/ggml/include" "$L/build/src/libllama.a" \
  "$L/build/ggml/src/libggml.a" "$L/build/ggml/src/libggml-cpu.a" "$L/build/ggml/src/libggml-base.a" \
  -fopenmp -lpthread -ldl -o "$T/record-avx512"
g++ -O2 -std=c++17 "$D/record.cpp" -I"$L/include" -I"$L/ggml/include" "$L/build/src/libllama.a" \
  "$L/build/ggml/src/libggml.a" -L"$L/build-avx2/bin" -lggml-cpu -lggml-base \
  -Wl,-rpath,"$L/build-avx2/bin" -fopenmp -lpthread -ldl -o "$T/record-avx2"
{
  echo '{"model": "llama-hd64-f32.gguf", "steps": 24, "cases": ['
  first=1
  for p in "1 403 407 261 378" "1 317 391 266 267" "1 291 262 379 286"; do
    [ $first = 1 ] || echo ','
    first=0
    printf '{"prompt_ids": [%s], "avx2": %s, "avx512": %s}' "$(echo $p | tr ' ' ',')" \
      "$("$T/record-avx2" "$D/llama-hd64-f32.gguf" 24 $p 2>/dev/null)" \
      "$("$T/record-avx512" "$D/llama-hd64-f32.gguf" 24 $p 2>/dev/null)"
  done
  echo ']}'
} >"$D/reference.json"
echo "wrote $D/reference.json"
