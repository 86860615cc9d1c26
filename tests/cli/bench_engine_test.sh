#!/usr/bin/env bash
# gantry bench engine --json: every figure engine_vs_llama.sh and the read-probe ratio read is
# there and plausible (positive, the ratio the quotient of the two probe figures, the weight
# bytes below the file's size), and --read-probe 0 leaves the probe out.
set -euo pipefail
GANTRY=$1
MODEL=$2
out=$("$GANTRY" bench engine --model "$MODEL" --threads 2 --reps 1 --prompt-tokens 16 \
  --gen-tokens 4 --seqs 2 --read-probe 30 --json 2>/dev/null)
python3 - "$out" <<'PY'
import json, sys
j = json.loads(sys.argv[1])
for k in ("pp_tokens_per_s", "tg_tokens_per_s", "batched_tg_tokens_per_s", "file_mib",
          "decode_weight_mib", "probe_decode_gbps", "probe_read_gbps", "decode_read_ratio"):
    assert isinstance(j.get(k), (int, float)) and j[k] > 0, (k, j.get(k))
assert j["probe_steps"] == 30, j["probe_steps"]
assert j["decode_weight_mib"] < j["file_mib"], (j["decode_weight_mib"], j["file_mib"])
r = j["probe_decode_gbps"] / j["probe_read_gbps"]
assert abs(j["decode_read_ratio"] - r) < 1e-9 * r, (j["decode_read_ratio"], r)
assert j["probe_read_pattern"][0].isdigit(), j["probe_read_pattern"]
PY
out=$("$GANTRY" bench engine --model "$MODEL" --threads 1 --reps 1 --prompt-tokens 8 \
  --gen-tokens 4 --seqs 0 --read-probe 0 --json 2>/dev/null)
python3 - "$out" <<'PY'
import json, sys
j = json.loads(sys.argv[1])
assert "decode_read_ratio" not in j and "probe_steps" not in j, j
assert j["tg_tokens_per_s"] > 0
PY
echo "ok"
