#!/usr/bin/env bash
# The job queue's benchmark (issue 5): jobs accepted per second (POST → 202) with 32 concurrent
# clients, and the queue's submit → start overhead with idle workers.
#
#   bench/jobs.sh [BUILD_DIR]      (default build; needs BUILD_DIR/gantry and BUILD_DIR/bench/jobs_load)
#   EXTRA_ARGS="--database-url postgresql://..." bench/jobs.sh   (the queue on PostgreSQL;
#   bench/jobs_pg.sh starts a throwaway PostgreSQL and runs both side by side)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-$here/../build}"
tmp="$(mktemp -d /tmp/gantry-jobs-bench-XXXXXX)"
pid=""
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
cat >"$tmp/gantry.toml" <<TOML
request_log = "off"
io_threads = 2
[jobs]
workers = 2
max_queued_jobs = 10000000
[[models]]
path = "$here/../models/stories260K.gguf"
threads = 1
TOML
# shellcheck disable=SC2086 # EXTRA_ARGS is a list of flags
"$build/gantry" serve --port 0 --data-dir "$tmp/data" --config "$tmp/gantry.toml" --no-cache ${EXTRA_ARGS:-} \
  >"$tmp/stdout" 2>"$tmp/stderr" &
pid=$!
port=""
for _ in $(seq 300); do
  port="$(sed -n 's/^Gantry listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$tmp/stdout" | head -n1)"
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$tmp/stderr" >&2; exit 1; }
"$build/bench/jobs_load" --port "$port" --clients "${CLIENTS:-32}" --seconds "${SECONDS_:-5}" \
  --overhead-jobs "${OVERHEAD_JOBS:-200}"
