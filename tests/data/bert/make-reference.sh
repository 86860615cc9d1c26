#!/usr/bin/env bash
# Records llama.cpp's embeddings of the tiny BERT-family models here (bert-reference.json), which
# tests/engine/model/bert_test.cpp and tests/integration compare Gantry's against within 1e-4.
#
# usage: make-reference.sh LLAMA_CPP_DIR
#   LLAMA_CPP_DIR  a llama.cpp checkout at the anchor commit (3f545bec) with llama-embedding built
#                  in build/bin (cmake --build build --target llama-embedding).
# The models come from make_bert.py (same directory). Each input runs alone (one sequence per
# llama-embedding call), with the default flash attention, 2 threads, L2 normalisation, and each
# pooling named below (--pooling overrides the file's pooling_type); --verbose-prompt prints the
# token ids, recorded so the tokenizer is checked too. (Default flash attention matters: without
# it, -fa off, K and V stay in float and the vectors move by about 1e-4.)
set -eu
L=${1:?usage: make-reference.sh LLAMA_CPP_DIR}
DIR=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-/usr/bin/python3}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
INPUTS=("Hello world, this is a test."
  "The quick brown fox jumps over the lazy dog"
  "a"
  "Café déjà vu: naïve résumé, 42 times!"
  "In a hole in the ground there lived a hobbit. Not a nasty, dirty, wet hole, filled with the ends of worms and an oozy smell, nor yet a dry, bare, sandy hole with nothing in it to sit down on or to eat: it was a hobbit-hole, and that means comfort.")
n=0
for m in bert:cls bert:mean nomic-bert:mean nomic-bert:cls nomic-bert-f16:mean; do
  model=${m%%:*}
  pooling=${m##*:}
  for i in "${!INPUTS[@]}"; do
    # llama-embedding at this commit sometimes exits before its last bytes reach stdout (as
    # llama-completion, ../families/make-greedy.sh): retry until the JSON is complete.
    for try in 1 2 3 4 5 6 7 8; do
      "$L/build/bin/llama-embedding" -m "$DIR/$model.gguf" -p "${INPUTS[$i]}" --pooling "$pooling" \
        --embd-normalize 2 --embd-output-format json -t 2 --verbose-prompt 2>/dev/null \
        > "$TMP/$n.out" || true
      [ "$(tail -c 4 "$TMP/$n.out" | tr -d ' \n')" = "}" ] && break
    done
    printf '%s\n%s\n%s\n' "$model.gguf" "$pooling" "${INPUTS[$i]}" > "$TMP/$n.meta"
    n=$((n + 1))
  done
done
"$PY" - "$TMP" "$n" "$DIR/bert-reference.json" <<'PYEOF'
import json, re, sys
tmp, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cases = []
for i in range(n):
    model, pooling, text = open(f"{tmp}/{i}.meta", encoding="utf-8").read().split("\n")[:3]
    raw = open(f"{tmp}/{i}.out", encoding="utf-8").read()
    if "{\n" not in raw:
        sys.exit(f"llama-embedding printed no JSON for {model} {pooling} {text!r}: {raw[-300:]}")
    ids = [int(x) for x in re.findall(r"^\s*(\d+) -> '", raw, re.M)]
    doc = json.loads(raw[raw.index("{\n"):])
    emb = doc["data"][0]["embedding"]
    cases.append({"model": model, "pooling": pooling, "input": text, "ids": ids, "embedding": emb})
with open(out, "w", encoding="utf-8") as f:
    json.dump({"llama_cpp": "3f545bec", "cases": cases}, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(f"{len(cases)} cases written to {out}")
PYEOF
