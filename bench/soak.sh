#!/usr/bin/env bash
# Soak run: mixed traffic for SOAK_SECONDS (default 1800) against build/gantry, sampling RSS, fds,
# threads and the WAL every 10 s; fails if any grows without bound. See bench/soak.py.
#   bench/soak.sh                      # 30 minutes
#   SOAK_SECONDS=120 bench/soak.sh     # the short run CI uses
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/soak.py --seconds "${SOAK_SECONDS:-1800}" "$@"
