#!/usr/bin/env bash
# Installs the Debian 12 packages Gantry needs to build and test, only the missing ones,
# so `make serve` / `make test` work on a fresh machine and cost nothing on a prepared one.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libssl-dev libsqlite3-dev
  libcli11-dev libtomlplusplus-dev
  libgtest-dev libgmock-dev libbenchmark-dev clang-format
  # The operator's-view tests (tests/observability): a real Prometheus (with promtool),
  # Alertmanager's amtool (checks the routing example) and the Chromium that playwright-core drives.
  prometheus prometheus-alertmanager chromium
  # nginx as a fixed-response upstream and as the load balancer in front of gateways
  # (tests/integration), systemd-analyze and PyYAML for the deploy/ checks (tests/deploy).
  nginx-light systemd python3-yaml
  # Shared state of several nodes (issue 13): hiredis and libpq for the Redis and PostgreSQL
  # adapters, and a real redis-server and PostgreSQL that the tests start on loopback ports.
  libhiredis-dev redis-server libpq-dev postgresql
)
# `bootstrap.sh --fuzz`: clang and its libFuzzer/sanitizer runtimes for `make fuzz`.
if [ "${1:-}" = "--fuzz" ]; then PKGS+=(clang libclang-rt-14-dev); fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# Node.js may come from Debian or from NodeSource; only install Debian's when none is present.
if ! command -v node >/dev/null 2>&1; then missing+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then missing+=(npm); fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "bootstrap: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
