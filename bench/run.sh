#!/usr/bin/env bash
# `make bench`: Gantry's benchmarks in one bounded command (about 10-15 minutes on 2 cores).
#
#   1. engine: `gantry bench engine` (pp512, tg, 8-sequence batched tg) on synthetic
#      TinyLlama-1.1B Q8_0 / Q4_0 / F16 (created once into bench/out/) and the bundled
#      stories260K;
#   2. server: bench/stream_load (streaming chat clients at 1, 4, 8, 16 concurrency, 64 tokens
#      each, temperature 0, ignore_eos) against `gantry serve` on TinyLlama Q8_0;
#   3. HTTP: wrk on GET /v1/models, 64 keep-alive connections, against the bundled model server;
#   4. cheap-path overheads (raw outputs only, by hand into docs/BENCHMARKS.md): bench/cache_hit.sh
#      (response-cache hit latency and throughput) and bench/overhead.sh (control-plane latency at
#      5,000 req/s, metrics + request-log throughput cost).
#
# With llama.cpp built next to the repository (../peers/llama.cpp, or GANTRY_PEER_DIR) the engine
# part also runs bench/engine_vs_llama.sh: both engines alternately on the same files, ratios
# Gantry / llama.cpp; without the peer the ratios are against the recorded anchors (and the
# report says so). Rewrites the results section of docs/BENCHMARKS.md (bench/report.py). Raw outputs stay in bench/out/results/ (git-ignored).
#
# Knobs (environment): BUILD (build dir, default build), THREADS (2), REPS (3), GEN_TOKENS (16,
# tg length for the 1.1B models; stories260K always uses 128), LEVELS (1,4,8,16), ROUNDS
# (requests per client, per level: 2,2,2,1),
# WRK_SECONDS (10), SKIP_ENGINE=1, SKIP_SERVER=1, SKIP_WRK=1, SKIP_OVERHEAD=1, NO_DOCS=1 (do not touch
# docs/BENCHMARKS.md), TYPES ("q8_0 q4_0 f16"), SKIP_PEER=1 (no llama.cpp side by side), and those of
# bench/engine_vs_llama.sh: GANTRY_PEER_DIR, GANTRY_PEER_MODELS, PEER_TYPES, PEER_ALL=1, PEER_ROUNDS
# (alternating rounds per model, default 3).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
THREADS=${THREADS:-2}
REPS=${REPS:-3}
GEN_TOKENS=${GEN_TOKENS:-16}
LEVELS=${LEVELS:-1,4,8,16}
ROUNDS=${ROUNDS:-2,2,2,1}
WRK_SECONDS=${WRK_SECONDS:-10}
TYPES=${TYPES-"q8_0 q4_0 f16"}
OUT=bench/out
RES=$OUT/results
GANTRY=$BUILD/gantry
LOAD=$BUILD/bench/stream_load
VOCAB=tests/data/vocab/ggml-vocab-llama-spm.gguf
BUNDLED=models/stories260K.gguf

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

SERVER_PID=
cleanup() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_server LOGFILE ARGS...: starts `gantry serve` on a free port, waits for /readyz.
start_server() {
  local logfile=$1
  shift
  PORT=$(free_port)
  "$GANTRY" serve --port "$PORT" --data-dir "$OUT/data" --threads "$THREADS" "$@" \
    >"$logfile" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    if curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || die "server exited; see $logfile"
    sleep 0.1
  done
  die "server not ready after 60 s; see $logfile"
}

stop_server() {
  cleanup
  SERVER_PID=
}

mkdir -p "$RES" "$OUT/data"
rm -f "$RES"/*.json "$RES"/*.jsonl "$RES"/*.txt "$RES"/*.md

# --- binaries -------------------------------------------------------------------------------
[[ -f $BUILD/build.ninja ]] || die "$BUILD is not configured; run 'make build' first"
if grep -q '^GANTRY_BUILD_BENCH:BOOL=OFF' "$BUILD/CMakeCache.txt" 2>/dev/null; then
  log "enabling GANTRY_BUILD_BENCH in $BUILD"
  cmake -S . -B "$BUILD" -DGANTRY_BUILD_BENCH=ON >/dev/null || die "cmake configure failed"
fi
log "building gantry and stream_load in $BUILD"
BUILD_STATE=fresh
if ! cmake --build "$BUILD" --target gantry stream_load fixed_rate control_bench read_bw -j "$(nproc)" >"$OUT/build.log" 2>&1; then
  [[ -x $GANTRY && -x $LOAD ]] || die "build failed (see $OUT/build.log)"
  BUILD_STATE="stale (build failed, see $OUT/build.log)"
  log "warning: build failed; benchmarking the existing binaries (see $OUT/build.log)"
fi

# --- machine ----------------------------------------------------------------------------------
{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
  echo "cores=$(nproc)"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src 2>/dev/null || echo '+dirty-src')"
  echo "build=$BUILD_STATE"
  echo "threads=$THREADS"
  echo "reps=$REPS"
  echo "gen_tokens=$GEN_TOKENS"
  echo "levels=$LEVELS"
  echo "rounds=$ROUNDS"
  echo "wrk_seconds=$WRK_SECONDS"
  echo "load_start=$(uptime | sed 's/.*load average: //')"
} >"$RES/meta.txt"
log "machine: $(sed -n 's/^cpu=//p' "$RES/meta.txt"), $(nproc) cores, load $(uptime | sed 's/.*load average: //')"

# --- 1. engine ------------------------------------------------------------------------------
needed=()
[[ ${SKIP_ENGINE:-0} == 1 ]] || needed+=($TYPES)
[[ ${SKIP_SERVER:-0} == 1 ]] || needed+=(q8_0)
for t in "${needed[@]}"; do
  f=$OUT/tinyllama-$t.gguf
  [[ -s $f ]] && continue
  avail_kb=$(df -Pk "$OUT" | awk 'NR==2 {print $4}')
  ((avail_kb > 4 * 1024 * 1024)) || die "under 4 GiB free in $OUT; a synthetic model takes up to 2.2 GB"
  log "creating synthetic $f (once)"
  timeout 300 "$GANTRY" model synth --like tinyllama-1.1b --type "$t" --vocab "$VOCAB" \
    --out "$f.tmp" >&2 || die "model synth failed for $t"
  mv "$f.tmp" "$f"
done

if [[ ${SKIP_ENGINE:-0} != 1 ]]; then
  log "engine: stories260K (pp512, tg128, 8-seq batched tg128, $REPS reps)"
  timeout 300 "$GANTRY" bench engine --model "$BUNDLED" --threads "$THREADS" --reps "$REPS" \
    --json 2>/dev/null >"$RES/engine-stories260K.json" || die "bench engine failed on $BUNDLED"
  for t in $TYPES; do
    log "engine: tinyllama-$t (pp512, tg$GEN_TOKENS, 8-seq batched tg$GEN_TOKENS, $REPS reps)"
    timeout 600 "$GANTRY" bench engine --model "$OUT/tinyllama-$t.gguf" --threads "$THREADS" \
      --reps "$REPS" --prompt-tokens 512 --gen-tokens "$GEN_TOKENS" --seqs 8 --json \
      2>/dev/null >"$RES/engine-tinyllama-$t.json" || die "bench engine failed on tinyllama-$t"
  done
  # Side by side with llama.cpp on this machine when the peer is built (bench/engine_vs_llama.sh:
  # GANTRY_PEER_DIR / LLAMA_CPP_DIR, GANTRY_PEER_MODELS, PEER_TYPES, PEER_ALL=1); the recorded
  # anchors are only the fallback.
  if [[ ${SKIP_PEER:-0} != 1 ]]; then
    peer_rc=0
    BUILD=$BUILD THREADS=$THREADS bench/engine_vs_llama.sh "$RES" >"$RES/side_by_side.txt" || peer_rc=$?
    if ((peer_rc == 3)); then
      log "no llama.cpp peer found: engine ratios fall back to the recorded anchors"
    elif ((peer_rc != 0)); then
      die "bench/engine_vs_llama.sh failed (rc $peer_rc)"
    else
      cat "$RES/side_by_side.txt" >&2
    fi
  fi
  if [[ -x $BUILD/bench/read_bw ]]; then
    log "read bandwidth probe: bench/read_bw --threads $THREADS"
    "$BUILD/bench/read_bw" --threads "$THREADS" --json >"$RES/read_bw.json" || die "read_bw failed"
  fi
fi

# --- 2. server: streaming chat load -----------------------------------------------------------
if [[ ${SKIP_SERVER:-0} != 1 ]]; then
  log "server: gantry serve tiny=tinyllama-q8_0 --max-seqs 16; clients $LEVELS x $ROUNDS rounds"
  start_server "$RES/serve-tiny.log" --model "tiny=$OUT/tinyllama-q8_0.gguf" --max-seqs 16
  timeout 600 "$LOAD" --port "$PORT" --model tiny --clients "$LEVELS" --rounds "$ROUNDS" \
    --max-tokens 64 >"$RES/server.jsonl" || die "stream_load failed"
  stop_server
fi

# --- 3. HTTP: wrk on GET /v1/models -----------------------------------------------------------
if [[ ${SKIP_WRK:-0} != 1 ]]; then
  if ! command -v wrk >/dev/null; then
    log "installing wrk (apt-get)"
    as_root apt-get install -y wrk >/dev/null 2>&1 ||
      { as_root apt-get update >/dev/null && as_root apt-get install -y wrk >/dev/null; } ||
      die "could not install wrk"
  fi
  log "wrk: GET /v1/models, 64 connections, ${WRK_SECONDS}s"
  start_server "$RES/serve-bundled.log"
  timeout $((WRK_SECONDS + 30)) wrk -t2 -c64 -d"${WRK_SECONDS}s" \
    "http://127.0.0.1:$PORT/v1/models" >"$RES/wrk.txt" || die "wrk failed"
  stop_server
fi

# --- 4. cheap-path overheads: response-cache hits, control plane, metrics + request log --------
if [[ ${SKIP_OVERHEAD:-0} != 1 ]]; then
  log "cache hits: bench/cache_hit.sh"
  BUILD=$BUILD SECONDS_EACH=$WRK_SECONDS bench/cache_hit.sh >"$RES/cache_hit.txt" 2>&1 ||
    die "cache_hit.sh failed"
  log "overheads: bench/overhead.sh (control plane at 5,000 req/s; metrics + log)"
  BUILD=$BUILD bench/overhead.sh >"$RES/overhead.txt" 2>&1 || die "overhead.sh failed"
  tail -3 "$RES/overhead.txt" >&2
fi

echo "load_end=$(uptime | sed 's/.*load average: //')" >>"$RES/meta.txt"

# --- report -----------------------------------------------------------------------------------
report_args=("$RES")
[[ ${NO_DOCS:-0} == 1 ]] || report_args+=(--docs docs/BENCHMARKS.md)
python3 bench/report.py "${report_args[@]}"
