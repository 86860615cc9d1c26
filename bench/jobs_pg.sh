#!/usr/bin/env bash
# The job queue on SQLite and on PostgreSQL side by side (issue 13: >= 3,000 jobs accepted/s with
# 32 clients on PostgreSQL, submit -> start <= 5 ms p50 with idle workers). Starts a throwaway
# PostgreSQL cluster on a free loopback port (as the postgres user when run as root: PostgreSQL
# refuses root), runs bench/jobs.sh against each store ROUNDS times, alternating.
#
#   ROUNDS=3 bench/jobs_pg.sh [BUILD_DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-$here/../build}"
bin=/usr/lib/postgresql/15/bin
tmp="$(mktemp -d /tmp/gantry-pg-bench-XXXXXX)"
as=""
if [ "$(id -u)" -eq 0 ]; then chmod 777 "$tmp"; chown postgres "$tmp"; as="runuser -u postgres --"; fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { $as "$bin/pg_ctl" -D "$tmp/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT
$as "$bin/initdb" -D "$tmp/data" -U gantry --auth=trust -E UTF8 --no-locale >/dev/null
$as "$bin/pg_ctl" -D "$tmp/data" -l "$tmp/pg.log" -w -o "-p $port -k $tmp -c listen_addresses=127.0.0.1" start >/dev/null
"$bin/createdb" -h 127.0.0.1 -p "$port" -U gantry gantry
url="postgresql://gantry@127.0.0.1:$port/gantry"
for r in $(seq "${ROUNDS:-3}"); do
  echo "== round $r: sqlite"
  "$here/jobs.sh" "$build"
  echo "== round $r: postgres"
  EXTRA_ARGS="--database-url $url" "$here/jobs.sh" "$build"
done
