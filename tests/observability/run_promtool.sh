#!/usr/bin/env bash
# promtool over deploy/observability: the rules and the Prometheus config parse, and the rules'
# unit tests (gantry-alerts.test.yml: budget and queue alerts) pass. Exits 77 (skipped) only when
# promtool is not installed.
set -euo pipefail
dir="${1:?usage: run_promtool.sh DEPLOY_OBSERVABILITY_DIR}"
if ! command -v promtool >/dev/null 2>&1; then
  echo "SKIP: promtool is not installed (apt-get install prometheus)"
  exit 77
fi
cd "$dir"
promtool check rules gantry-alerts.yml
promtool check config prometheus.yml
promtool test rules gantry-alerts.test.yml
