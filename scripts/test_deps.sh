#!/usr/bin/env bash
# Installs what the end-to-end tests need beyond the C++ build: the official `openai` npm
# client, exactly as pinned by tests/e2e/package-lock.json, and playwright-core for the dashboard
# test, pinned by tests/observability/package-lock.json (`npm ci`). Idempotent and quick when
# already done; `make test` runs it, and tests/e2e/run_e2e.sh runs it when node_modules is missing.
set -euo pipefail
cd "$(dirname "$0")/../tests/e2e"
if [ ! -d node_modules/openai ]; then
  command -v npm >/dev/null 2>&1 || {
    echo "test_deps: npm is not installed (run scripts/bootstrap.sh)" >&2
    exit 1
  }
  npm ci --no-audit --no-fund --loglevel=error
fi
cd ../observability
if [ ! -d node_modules/playwright-core ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
