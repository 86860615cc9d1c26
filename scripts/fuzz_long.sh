#!/usr/bin/env bash
# The long fuzzing runs issue 18 asks for (each target to 10 million executions or 2 hours), on a
# machine shared with builds and benchmarks: each target runs in segments of at most
# FUZZ_SEGMENT seconds (default 300) at `nice -n 19`, each segment under the shared CPU lock
# (`flock -s`) so a benchmark taking the lock exclusively gets the CPU between segments. Each
# segment resumes from the target's grown corpus in FUZZ_LONG_DIR/<target>/corpus (a scratch
# directory, never the committed one, which is read as a seed); executions and time are summed
# across segments from libFuzzer's final stats.
#
#   scripts/fuzz_long.sh TARGET...      # FUZZ_EXECS=10000000 FUZZ_MAX_SECONDS=7200 by default
#
# Prints, per target: executions, seconds, exec/s, cov, ft, result. A crash stops the target;
# its input is in FUZZ_LONG_DIR/<target>/crash-*. Stops early when FUZZ_DEADLINE (a unix time)
# would be passed by the next segment.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${FUZZ_BUILD:-build-fuzz}
DIR=${FUZZ_LONG_DIR:-$BUILD/long}
WANT=${FUZZ_EXECS:-10000000}
MAX_S=${FUZZ_MAX_SECONDS:-7200}
SEG=${FUZZ_SEGMENT:-300}
DEADLINE=${FUZZ_DEADLINE:-0}
LOCK=${FUZZ_LOCK:-/work/notes/cpu.lock}
stat_of() { grep -oE "$1: *[0-9]+" "$2" | grep -oE '[0-9]+$' | tail -1; }
for t in "$@"; do
  bin="$BUILD/tests/fuzz/$t"
  [ -x "$bin" ] || { echo "fuzz_long: $bin is not built" >&2; continue; }
  d="$DIR/$t"
  mkdir -p "$d/corpus" "$d/logs"
  [ -f "$d/state" ] || echo "0 0 - - running" >"$d/state"
  read -r execs secs cov ft result <"$d/state"
  while [ "$result" = running ] && [ "$execs" -lt "$WANT" ] && [ "$secs" -lt "$MAX_S" ]; do
    now=$(date +%s)
    left=$SEG
    [ "$DEADLINE" -gt 0 ] && [ $((DEADLINE - now)) -lt "$left" ] && left=$((DEADLINE - now))
    [ "$left" -lt 30 ] && { result=stopped; break; }
    n=$(($(ls "$d/logs" | wc -l) + 1))
    log="$d/logs/seg$n.log"
    start=$(date +%s)
    flock -s -o "$LOCK" nice -n 19 "$bin" -max_total_time="$left" -timeout=10 -rss_limit_mb=2048 \
      -max_len=65536 -print_final_stats=1 -artifact_prefix="$d/" \
      "$d/corpus" "tests/fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    end=$(date +%s)
    runs=$(stat_of 'stat::number_of_executed_units' "$log")
    execs=$((execs + ${runs:-0}))
    secs=$((secs + end - start))
    c=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')
    f=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')
    cov=${c:-$cov}
    ft=${f:-$ft}
    if [ $rc -ne 0 ]; then
      result="crash(exit $rc, $log)"
      result=${result// /_}
    fi
    echo "$execs $secs $cov $ft $result" >"$d/state"
  done
  if [ "$result" = stopped ]; then
    echo "$execs $secs $cov $ft running" >"$d/state" # resumable
    result="partial (deadline)"
  else
    [ "$result" = running ] && result=clean
    echo "$execs $secs $cov $ft $result" >"$d/state"
  fi
  rate=$((secs > 0 ? execs / secs : 0))
  printf '%-22s %12s %7ss %8s/s cov %6s ft %7s %s\n' "$t" "$execs" "$secs" "$rate" "$cov" "$ft" \
    "$result"
done
