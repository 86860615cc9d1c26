#!/usr/bin/env bash
# promtool and amtool over deploy/observability: the rules and the Prometheus config parse, the
# rules' unit tests (gantry-alerts.test.yml: budget and queue alerts) pass, and the Alertmanager
# example parses and routes as its comments say. Exits 77 (skipped) only when promtool is not
# installed (apt-get install prometheus prometheus-alertmanager).
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
command -v amtool >/dev/null 2>&1 || {
  echo "FAIL: amtool is not installed (apt-get install prometheus-alertmanager)" >&2
  exit 1
}
amtool check-config alertmanager.yml
route() { # labels... expected-receiver
  local want="${*: -1}" got
  got="$(amtool config routes test --config.file=alertmanager.yml "${@:1:$#-1}" 2>/dev/null)"
  if [ "$got" != "$want" ]; then
    echo "FAIL: ${*:1:$#-1} routes to '$got', expected '$want'" >&2
    exit 1
  fi
  echo "route ok: ${*:1:$#-1} -> $got"
}
route alertname=GantryInstanceDown severity=critical pager
route alertname=GantryBudgetExhausted severity=critical pager
route alertname=GantryBudget80Percent severity=warning finance
route alertname=GantryBudget50Percent severity=info finance
route alertname=GantryRequestQueueGrowing severity=warning team-chat
