#!/usr/bin/env bash
# Gantry's engine and llama.cpp side by side in one run, on the same GGUF files and threads
# (issue 16: "compare on your own machine"). `make bench` calls it when the peer is present.
#
#   bench/engine_vs_llama.sh [OUT_DIR]
#
# Per model and round, alternately: `gantry bench engine --model M --threads T --reps 1 --seqs 0
# --json` then `llama-bench -m M -t T -p 512 -n 128 -r 1 -o json`, so drift on a shared machine hits
# both alike; prints the medians over the rounds and the ratios Gantry / llama.cpp for pp512 and
# tg128. Raw outputs go to OUT_DIR (default bench/out/results), summary.json there too.
# With BUILD/bench/read_bw built, each round also runs the read-bandwidth probe (1 GiB) right
# before Gantry's decode, and the table adds the GB/s Gantry's tg streams (tg x the bytes of the
# matrices a decode step reads, `decode_weight_mib`) as a share of the probe's best pattern's
# median (issue 16: "decode reaching >= 90% of the measured read bandwidth"). Gantry's JSON also
# carries its own reading of that goal (`decode_read_ratio`: after the timed runs, 40 decode steps
# each followed by a plain read of the same weights, so that the host's drift moves both alike),
# which the summary prints first.
#
# Environment:
#   GANTRY_PEER_DIR (or LLAMA_CPP_DIR)  llama.cpp checkout with build/bin/llama-bench
#                                       (default ../peers/llama.cpp, relative to the repository)
#   GANTRY_PEER_MODELS                  directory of synth-1.1b-<type>.gguf files
#                                       (default: models/ next to the peer's checkout)
#   PEER_TYPES   model types to run (default "q4_0 q8_0", about 4 minutes on 2 cores);
#   PEER_ALL=1   every type found: q8_0 q4_0 q4_k_m q5_k_m f16 (about 12 minutes)
#   PEER_ROUNDS (3), THREADS (2), BUILD (build), PP (512), TG (128)
#   OLD_GANTRY   another gantry binary (e.g. built from main) measured in the same rounds: adds
#                "before" columns, for before/after tables
#   AVX2_ONLY=1  both engines without AVX-512 (issue 16 item 5): Gantry with GANTRY_NO_AVX512=1
#                and llama.cpp from PEER_DIR/build-avx2, a build without AVX-512 made once with
#                  cmake -S PEER_DIR -B PEER_DIR/build-avx2 -DCMAKE_BUILD_TYPE=Release \
#                    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
#                    -DGGML_BMI2=ON -DGGML_AVX512=OFF && cmake --build PEER_DIR/build-avx2 \
#                    --target llama-bench
# Exit status 3 when the peer (llama-bench or the models) is absent: run.sh then falls back to
# the recorded anchors.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/out/results}
BUILD=${BUILD:-build}
THREADS=${THREADS:-2}
ROUNDS=${PEER_ROUNDS:-3}
PP=${PP:-512}
TG=${TG:-128}
PEER_DIR=${GANTRY_PEER_DIR:-${LLAMA_CPP_DIR:-../peers/llama.cpp}}
PEER_MODELS=${GANTRY_PEER_MODELS:-$PEER_DIR/../models}
PEER_BUILD=build
if [[ ${AVX2_ONLY:-0} == 1 ]]; then
  PEER_BUILD=build-avx2
  export GANTRY_NO_AVX512=1 # read by the gantry processes below
fi
LLAMA_BENCH=$PEER_DIR/$PEER_BUILD/bin/llama-bench
GANTRY=$BUILD/gantry

log() { printf '[engine-vs-llama %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ ! -x $LLAMA_BENCH ]]; then
  log "no peer: $LLAMA_BENCH not found (set GANTRY_PEER_DIR)"
  exit 3
fi
[[ -x $GANTRY ]] || { log "error: $GANTRY not built"; exit 1; }

if [[ ${PEER_ALL:-0} == 1 ]]; then
  types=(q8_0 q4_0 q4_k_m q5_k_m f16)
else
  read -r -a types <<<"${PEER_TYPES:-q4_0 q8_0}"
fi
models=()
for t in "${types[@]}"; do
  f=$PEER_MODELS/synth-1.1b-$t.gguf
  if [[ -s $f ]]; then
    models+=("$f")
  else
    log "skipping $t: $f missing"
  fi
done
if ((${#models[@]} == 0)); then
  log "no peer models in $PEER_MODELS (set GANTRY_PEER_MODELS)"
  exit 3
fi

mkdir -p "$OUT"
peer_commit=$(git -C "$PEER_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
log "peer: $LLAMA_BENCH (commit $peer_commit); ${#models[@]} model(s) x $ROUNDS rounds, $THREADS threads"
if [[ ${AVX2_ONLY:-0} == 1 ]]; then
  # Refuse to label a run AVX2-only unless the peer's CPU backend holds no AVX-512 instruction
  # (no zmm register in its code) and Gantry reports the AVX2 kernels.
  cpu_lib=$(ls "$PEER_DIR/$PEER_BUILD"/bin/libggml-cpu.so 2>/dev/null || true)
  if [[ -z $cpu_lib ]] || objdump -d "$cpu_lib" | grep -q '%zmm'; then
    log "error: $PEER_DIR/$PEER_BUILD has no libggml-cpu.so free of AVX-512 code"; exit 1
  fi
  isa=$("$GANTRY" bench engine --model "${models[0]}" --threads 1 --reps 1 --seqs 0 \
    --prompt-tokens 4 --gen-tokens 1 --read-probe 0 --json 2>/dev/null | python3 -c 'import sys,json; print(json.load(sys.stdin).get("isa","?"))')
  [[ $isa == avx2 ]] || { log "error: gantry reports kernels '$isa' under GANTRY_NO_AVX512=1"; exit 1; }
  log "AVX2 only: gantry kernels $isa, llama.cpp from $PEER_BUILD (no zmm in $(basename "$cpu_lib"))"
fi
for m in "${models[@]}"; do
  base=$(basename "$m" .gguf)
  for r in $(seq "$ROUNDS"); do
    if [[ -x $BUILD/bench/read_bw ]]; then
      "$BUILD/bench/read_bw" --threads "$THREADS" --mib 1024 --reps 3 --json \
        >"$OUT/sbs-$base-readbw-$r.json" 2>/dev/null || rm -f "$OUT/sbs-$base-readbw-$r.json"
    fi
    log "$base round $r/$ROUNDS: gantry"
    timeout 900 "$GANTRY" bench engine --model "$m" --threads "$THREADS" --reps 1 --seqs 0 \
      --prompt-tokens "$PP" --gen-tokens "$TG" --json 2>/dev/null >"$OUT/sbs-$base-gantry-$r.json"
    # A results file of an earlier run's old binary would otherwise be reported as this run's.
    rm -f "$OUT/sbs-$base-old-$r.json"
    if [[ -n ${OLD_GANTRY:-} ]]; then
      log "$base round $r/$ROUNDS: old gantry ($OLD_GANTRY)"
      timeout 900 "$OLD_GANTRY" bench engine --model "$m" --threads "$THREADS" --reps 1 --seqs 1 \
        --prompt-tokens "$PP" --gen-tokens "$TG" --json 2>/dev/null >"$OUT/sbs-$base-old-$r.json"
    fi
    log "$base round $r/$ROUNDS: llama.cpp"
    timeout 900 "$LLAMA_BENCH" -m "$m" -t "$THREADS" -p "$PP" -n "$TG" -r 1 -o json \
      2>/dev/null >"$OUT/sbs-$base-llama-$r.json"
  done
done

python3 - "$OUT" "$ROUNDS" "$PP" "$TG" "$peer_commit" "${models[@]}" <<'PY'
import json, os, statistics as st, sys
out, rounds, pp, tg, commit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
models = sys.argv[6:]
rows = []
isa = " (AVX2 only: GANTRY_NO_AVX512=1, llama.cpp without AVX-512)" if os.environ.get("AVX2_ONLY") == "1" else ""
print(f"Gantry vs llama.cpp ({commit}){isa}, same files, medians of {rounds} alternating rounds (tok/s)")
print()
print(f"| model | Gantry pp{pp} | llama.cpp pp{pp} | ratio | Gantry tg{tg} | llama.cpp tg{tg} | ratio |")
print("|---|---:|---:|---:|---:|---:|---:|")
for m in models:
    base = os.path.basename(m)[:-5]
    g_pp, g_tg, l_pp, l_tg = [], [], [], []
    for r in range(1, rounds + 1):
        g = json.load(open(f"{out}/sbs-{base}-gantry-{r}.json"))
        g_pp.append(g["pp_tokens_per_s"]); g_tg.append(g["tg_tokens_per_s"])
        for t in json.load(open(f"{out}/sbs-{base}-llama-{r}.json")):
            if t.get("n_prompt") == pp and t.get("n_gen") == 0:
                l_pp.append(t["avg_ts"])
            elif t.get("n_gen") == tg and t.get("n_prompt") == 0:
                l_tg.append(t["avg_ts"])
    row = {"model": base, "gantry_pp": st.median(g_pp), "llama_pp": st.median(l_pp),
           "gantry_tg": st.median(g_tg), "llama_tg": st.median(l_tg),
           "rounds": {"gantry_pp": g_pp, "llama_pp": l_pp, "gantry_tg": g_tg, "llama_tg": l_tg}}
    if os.path.exists(f"{out}/sbs-{base}-old-1.json"):
        o = [json.load(open(f"{out}/sbs-{base}-old-{r}.json")) for r in range(1, rounds + 1)]
        row["old_pp"] = st.median([j["pp_tokens_per_s"] for j in o])
        row["old_tg"] = st.median([j["tg_tokens_per_s"] for j in o])
        row["rounds"]["old_pp"] = [j["pp_tokens_per_s"] for j in o]
        row["rounds"]["old_tg"] = [j["tg_tokens_per_s"] for j in o]
    row["pp_ratio"] = row["gantry_pp"] / row["llama_pp"]
    row["tg_ratio"] = row["gantry_tg"] / row["llama_tg"]
    bw = [json.load(open(f"{out}/sbs-{base}-readbw-{r}.json"))["median_gbps"]
          for r in range(1, rounds + 1) if os.path.exists(f"{out}/sbs-{base}-readbw-{r}.json")]
    if bw:
        g1 = json.load(open(f"{out}/sbs-{base}-gantry-1.json"))
        # The bytes a decode step reads (layers + LM head; older builds: the whole file, which
        # also counts the embedding table a step reads one row of).
        step = g1["decode_weight_mib"] * 1048576 if "decode_weight_mib" in g1 else os.path.getsize(m)
        row["tg_gbps"] = row["gantry_tg"] * step / 1e9
        row["read_gbps"] = st.median(bw)
        row["rounds"]["read_gbps"] = bw
    # Gantry's own probe: decode steps each followed by a plain read of the same weights, so the
    # host's drift from minute to minute moves both alike (gantry bench engine --read-probe).
    gj = [json.load(open(f"{out}/sbs-{base}-gantry-{r}.json")) for r in range(1, rounds + 1)]
    ratios = [j["decode_read_ratio"] for j in gj if "decode_read_ratio" in j]
    if ratios:
        row["decode_read_ratio"] = st.median(ratios)
        row["rounds"]["decode_read_ratio"] = ratios
        row["probe_decode_gbps"] = st.median([j["probe_decode_gbps"] for j in gj if "decode_read_ratio" in j])
        row["probe_read_gbps"] = st.median([j["probe_read_gbps"] for j in gj if "decode_read_ratio" in j])
    rows.append(row)
    print(f"| {base} | {row['gantry_pp']:.1f} | {row['llama_pp']:.1f} | {row['pp_ratio']:.2f}x "
          f"| {row['gantry_tg']:.1f} | {row['llama_tg']:.1f} | {row['tg_ratio']:.2f}x |")
    if "old_tg" in row:
        print(f"|   before (OLD_GANTRY) | {row['old_pp']:.1f} | | {row['old_pp'] / row['llama_pp']:.2f}x "
              f"| {row['old_tg']:.1f} | | {row['old_tg'] / row['llama_tg']:.2f}x |")
if any("decode_read_ratio" in r for r in rows):
    print()
    print("Gantry's decode against a plain read of the same weights, step by step (gantry bench "
          "engine --read-probe: each decode step followed by one read pass; medians of the rounds):")
    for r in rows:
        if "decode_read_ratio" in r:
            print(f"- {r['model']}: {r['probe_decode_gbps']:.1f} GB/s = "
                  f"{100 * r['decode_read_ratio']:.0f} % of {r['probe_read_gbps']:.1f} GB/s "
                  f"(rounds: {', '.join(f'{100 * x:.0f} %' for x in r['rounds']['decode_read_ratio'])})")
if any("read_gbps" in r for r in rows):
    print()
    print("tg against bench/read_bw run before the round (tg x the weight bytes a decode step "
          "reads; read_bw: its best pattern's median, median of the rounds):")
    for r in rows:
        if "read_gbps" in r:
            print(f"- {r['model']}: {r['tg_gbps']:.1f} GB/s = {100 * r['tg_gbps'] / r['read_gbps']:.0f} % "
                  f"of {r['read_gbps']:.1f} GB/s")
json.dump({"peer_commit": commit, "rounds": rounds, "models": rows},
          open(f"{out}/side_by_side.json", "w"), indent=1)
PY
