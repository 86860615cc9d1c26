#!/usr/bin/env bash
# Two builds of Gantry measured alternately in one run, so that drift on the shared 2-core
# machine hits both alike (issue 11: "every benchmark is within noise of its value before —
# re-measure and record side by side").
#
#   OLD=/path/to/old/build NEW=build ROUNDS=3 bench/side_by_side.sh
#
# OLD and NEW are build directories holding gantry and bench/{fixed_rate,jobs_load,stream_load}
# (for the old tree: cmake --build DIR --target gantry fixed_rate jobs_load stream_load). Per
# round and build:
#   cache hit — bench/cache_hit.sh: wrk p50 at 1 connection, req/s at 64 connections;
#   overhead  — bench/overhead.sh: fixed_rate p50 open vs keyed (the control plane's cost);
#   jobs      — bench/jobs.sh: jobs accepted/s with 32 clients, submit → start p50;
#   serving   — stream_load on the bundled model, 4 streaming clients × 4 requests of 64 tokens:
#               aggregate tokens/s and TTFT p50.
# Prints the medians side by side with NEW/OLD ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${OLD:?set OLD to the old build directory}
NEW=${NEW:-build}
ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-5}
if ! command -v wrk >/dev/null; then # cache_hit.sh and overhead.sh drive wrk
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y -q wrk >/dev/null; else sudo apt-get install -y -q wrk >/dev/null; fi
fi
out=$(mktemp -d /tmp/gantry-sbs-XXXXXX)
trap 'rm -rf "$out"' EXIT

serving() { # build
  local tmp port pid
  tmp=$(mktemp -d /tmp/gantry-sbs-serve-XXXXXX)
  "$1/gantry" serve --port 0 --data-dir "$tmp" --threads 2 --no-cache --request-log off \
    >"$tmp/stdout" 2>"$tmp/stderr" &
  pid=$!
  for _ in $(seq 300); do
    port=$(sed -n 's/^Gantry listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$tmp/stdout" | head -n1)
    [ -n "$port" ] && break
    sleep 0.1
  done
  "$1/bench/stream_load" --port "$port" --model stories260K --clients 4 --rounds 4 \
    --max-tokens 64 | tail -n1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}

for r in $(seq "$ROUNDS"); do
  for which in old new; do
    b=$OLD; [ $which = new ] && b=$NEW
    log="$out/$which.$r"
    BUILD=$b SECONDS_EACH=$SECONDS_EACH bench/cache_hit.sh >"$log.cache" 2>&1
    BUILD=$b SECONDS_EACH=$SECONDS_EACH ROUNDS=1 bench/overhead.sh >"$log.overhead" 2>&1
    SECONDS_=$SECONDS_EACH bench/jobs.sh "$b" >"$log.jobs" 2>&1
    serving "$b" >"$log.serve" 2>&1
    echo "round $r $which: done" >&2
  done
done

python3 - "$out" "$ROUNDS" <<'PY'
import sys, re, json, statistics as st, glob, os
out, rounds = sys.argv[1], int(sys.argv[2])
def num(s):
    m = re.match(r'([\d.]+)(us|ms|s)?', s)
    v = float(m.group(1)); u = m.group(2) or ''
    return v * {'us': 1, 'ms': 1000, 's': 1e6, '': 1}[u]
def cache(path):
    t = open(path).read()
    lat = re.findall(r'^\s+50%\s+(\S+)', t, re.M)
    rps = re.findall(r'^Requests/sec:\s+([\d.]+)', t, re.M)
    return {'cache hit p50 (us, 1 conn)': num(lat[0]), 'cache hit req/s (64 conns)': float(rps[1])}
def overhead(path):
    t = open(path).read()
    m = re.search(r'p50 open ([\d.]+) us, keyed ([\d.]+) us', t)
    return {'p50 open (us, 5000 req/s)': float(m.group(1)), 'p50 keyed (us, 5000 req/s)': float(m.group(2))}
def jobs(path):
    j = json.loads([l for l in open(path) if l.startswith('{')][-1])
    return {'jobs accepted/s (32 clients)': j['accepted_per_s'], 'submit->start p50 (ms)': j['submit_to_start_p50_ms']}
def serve(path):
    j = json.loads([l for l in open(path) if l.startswith('{')][-1])
    return {'serving tok/s (4 streams)': j['agg_tokens_per_s'], 'serving TTFT p50 (ms)': j['ttft_p50_s'] * 1000}
res = {'old': {}, 'new': {}}
for w in res:
    for r in range(1, rounds + 1):
        base = os.path.join(out, f'{w}.{r}')
        for f, ext in ((cache, 'cache'), (overhead, 'overhead'), (jobs, 'jobs'), (serve, 'serve')):
            try:
                for k, v in f(f'{base}.{ext}').items():
                    res[w].setdefault(k, []).append(v)
            except Exception as e:
                print(f'# {w} round {r} {ext}: could not parse ({e}); see the raw log', file=sys.stderr)
                print(open(f'{base}.{ext}').read()[-2000:], file=sys.stderr)
print(f'| metric (median of {rounds}) | old | new | new/old | old rounds | new rounds |')
print('|---|---:|---:|---:|---|---|')
for k in res['old']:
    o, n = st.median(res['old'][k]), st.median(res['new'].get(k, [float('nan')]))
    ratio = f'{n / o:.2f}' if o else '—'  # a 0 ms median (submit->start) has no ratio
    each = lambda w: ', '.join(f'{v:.1f}' for v in res[w].get(k, []))
    print(f'| {k} | {o:.1f} | {n:.1f} | {ratio} | {each("old")} | {each("new")} |')
PY
