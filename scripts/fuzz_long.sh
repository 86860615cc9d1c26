#!/usr/bin/env bash
# The long fuzzing runs issue 18 asks for (each target to 10 million executions or 2 hours), on a
# machine shared with builds and benchmarks: each target runs in segments of at most
# FUZZ_SEGMENT seconds (default 300) at `nice -n 19`; with FUZZ_LOCK=<file>, each segment holds
# that file shared (`flock -s`) so a benchmark taking it exclusively gets the CPU between segments. Each
# segment resumes from the target's grown corpus in FUZZ_LONG_DIR/<target>/corpus (a scratch
# directory, never the committed one, which is read as a seed). Totals are summed over the
# segments' logs (FUZZ_LONG_DIR/<target>/logs/) from libFuzzer's final stats, so a run can be
# stopped and resumed at any time (an interrupted segment counts only if it printed its stats).
#
#   scripts/fuzz_long.sh TARGET...      # FUZZ_EXECS=10000000 FUZZ_MAX_SECONDS=7200 by default
#
# Prints, per target: executions, fuzzing seconds (libFuzzer's, lock waits excluded), exec/s,
# cov, ft (the last segment's), result. A crash stops the target: its input is
# FUZZ_LONG_DIR/<target>/crash-* and the result names the log. FUZZ_DEADLINE (a unix time) stops
# before a segment would run past it.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${FUZZ_BUILD:-build-fuzz}
DIR=${FUZZ_LONG_DIR:-$BUILD/long}
WANT=${FUZZ_EXECS:-10000000}
MAX_S=${FUZZ_MAX_SECONDS:-7200}
SEG=${FUZZ_SEGMENT:-300}
# libFuzzer's per-input timeout. At nice 19 beside compilers an input that runs in milliseconds
# alone can wait over 10 s for the CPU; FUZZ_TIMEOUT=60 keeps hangs caught without those.
TIMEOUT=${FUZZ_TIMEOUT:-10}
NICE=${FUZZ_NICE:-19} # a target that needs executions more than hours can run at a higher priority
DEADLINE=${FUZZ_DEADLINE:-0}
LOCK=${FUZZ_LOCK:-}
locked() { if [ -n "$LOCK" ]; then flock -s -o "$LOCK" "$@"; else "$@"; fi; }
# Totals over the segments' logs: sets execs, secs, cov, ft, crash.
totals() {
  execs=0 secs=0 cov=- ft=- crash=
  local l r s
  for l in $(ls -tr "$1"/logs/*.log 2>/dev/null); do
    r=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$l" | grep -oE '[0-9]+$' | tail -1)
    s=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$l" | grep -oE '[0-9]+ second' | grep -oE '[0-9]+')
    execs=$((execs + ${r:-0}))
    secs=$((secs + ${s:-0}))
    [ -z "$s" ] && [ -n "$r" ] && secs=$((secs + $(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$l" | grep -oE '[0-9]+$' | awk -v r="$r" '{print ($1 > 0) ? int(r / $1) : 0}')))
    cov=$(grep -oE 'cov: [0-9]+' "$l" | tail -1 | grep -oE '[0-9]+' || echo "$cov")
    ft=$(grep -oE 'ft: [0-9]+' "$l" | tail -1 | grep -oE '[0-9]+' || echo "$ft")
    grep -qE '^==[0-9]+==.*(ERROR|deadly signal)|SUMMARY: (AddressSanitizer|UndefinedBehaviorSanitizer|libFuzzer)' "$l" && crash=$l
  done
  [ -n "$cov" ] || cov=-
  [ -n "$ft" ] || ft=-
}
for t in "$@"; do
  bin="$BUILD/tests/fuzz/$t"
  [ -x "$bin" ] || { echo "fuzz_long: $bin is not built" >&2; continue; }
  d="$DIR/$t"
  mkdir -p "$d/corpus" "$d/logs"
  totals "$d"
  result=clean
  while [ -z "$crash" ] && [ "$execs" -lt "$WANT" ] && [ "$secs" -lt "$MAX_S" ]; do
    left=$SEG
    [ $((MAX_S - secs)) -lt "$left" ] && left=$((MAX_S - secs))
    now=$(date +%s)
    [ "$DEADLINE" -gt 0 ] && [ $((DEADLINE - now)) -lt "$left" ] && left=$((DEADLINE - now))
    [ "$left" -lt 30 ] && { result="partial (deadline)"; break; }
    log="$d/logs/seg-$(date +%Y%m%d%H%M%S).log"
    locked nice -n "$NICE" "$bin" -max_total_time="$left" -timeout="$TIMEOUT" -rss_limit_mb=2048 \
      -max_len=65536 -print_final_stats=1 -artifact_prefix="$d/" \
      "$d/corpus" "tests/fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    totals "$d"
    [ $rc -ne 0 ] && [ -z "$crash" ] && crash="$log (exit $rc)"
  done
  [ -n "$crash" ] && result="CRASH: $crash"
  [ "$result" = clean ] && [ "$execs" -lt "$WANT" ] && [ "$secs" -lt "$MAX_S" ] && result=partial
  rate=$((secs > 0 ? execs / secs : 0))
  printf '%-22s %12s %7ss %8s/s cov %6s ft %7s %s\n' "$t" "$execs" "$secs" "$rate" "$cov" "$ft" \
    "$result"
done
