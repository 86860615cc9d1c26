#!/usr/bin/env bash
# Records stories-logprobs.json: llama.cpp's llama-server (the peer build, this machine's CPU) on
# the bundled model, greedy, 64 tokens, top-5 log-probabilities per step, for each prompt below.
# One slot and a fresh KV cache per request, so that no other request's cells change the flash
# attention's split (llama.cpp splits the KV range across threads past 512 cells).
#   tests/data/stories-local/make-reference.sh LLAMA_CPP_BUILD_DIR MODEL
set -euo pipefail
BIN=$1/bin/llama-server
MODEL=$2
OUT=$(cd "$(dirname "$0")" && pwd)/stories-logprobs.json
PORT=${PORT:-18556}
"$BIN" -m "$MODEL" --host 127.0.0.1 --port "$PORT" -t 2 -np 1 -c 512 --no-cache-prompt >/dev/null 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.2; done
/usr/bin/python3 - "$PORT" "$OUT" "$(git -C "$1/.." rev-parse HEAD 2>/dev/null || echo unknown)" <<'PY'
import json, sys, urllib.request
port, out, commit = sys.argv[1], sys.argv[2], sys.argv[3]
prompts = ["Once upon a time", "Lily wanted to", "The sun was", "Tom and his dog",
           "One day, a little bird", "She looked at the big tree and", "The cat", "Mom said"]
def post(path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))
cases = []
for p in prompts:
    ids = post("/tokenize", {"content": p, "add_special": True, "parse_special": True})["tokens"]
    r = post("/completion", {"prompt": ids, "n_predict": 64, "temperature": 0, "top_k": 1,
                             "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0, "n_probs": 5,
                             "samplers": ["top_k", "temperature"], "seed": 42,
                             "cache_prompt": False})
    steps = [{"id": s["id"], "logprob": s["logprob"],
              "top_logprobs": [{"id": t["id"], "logprob": t["logprob"]} for t in s["top_logprobs"]]}
             for s in r["completion_probabilities"]]
    cases.append({"prompt": p, "prompt_token_ids_with_bos": ids,
                  "generated_token_ids": [s["id"] for s in steps], "top5_probs_per_step": steps})
json.dump({"generator": "llama-server /completion, -np 1 -c 512 -t 2, fresh KV per request",
           "llama_cpp_commit": commit, "cases": cases}, open(out, "w"), indent=1)
print(f"wrote {out}: {len(cases)} prompts")
PY
