#!/usr/bin/env bash
# Runs every libFuzzer target in build-fuzz for FUZZ_SECONDS each (default 60) on its committed
# seed corpus (tests/fuzz/corpus/<target>/, read-only) plus a scratch corpus under
# build-fuzz/corpus/<target>/ that grows across runs. Fails if any target crashes, leaks or
# times out; crash inputs are written to build-fuzz/artifacts/. Prints one line per target with
# executions and coverage (libFuzzer's final stats). `FUZZ_TARGETS="a b"` picks targets.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${FUZZ_BUILD:-build-fuzz}
SECONDS_EACH=${FUZZ_SECONDS:-60}
TARGETS=${FUZZ_TARGETS:-$(ls tests/fuzz/corpus)}
mkdir -p "$BUILD/artifacts" "$BUILD/logs"
fail=0
printf '%-22s %12s %10s %8s %6s\n' target executions exec/s cov ft
for t in $TARGETS; do
  bin="$BUILD/tests/fuzz/$t"
  [ -x "$bin" ] || { echo "fuzz: $bin is not built (make fuzz builds it)" >&2; fail=1; continue; }
  mkdir -p "$BUILD/corpus/$t"
  log="$BUILD/logs/$t.log"
  "$bin" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/$t-" \
    "$BUILD/corpus/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')
  printf '%-22s %12s %10s %8s %6s\n' "$t" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}"
  if [ $rc -ne 0 ]; then
    echo "fuzz: $t failed (exit $rc); log: $log" >&2
    tail -40 "$log" >&2
    fail=1
  fi
done
exit $fail
