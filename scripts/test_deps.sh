#!/usr/bin/env bash
# Installs what the end-to-end tests need beyond the C++ build: the official `openai` npm
# client (tests/e2e/package.json, pinned by package-lock.json). Idempotent and quick when done.
set -euo pipefail
cd "$(dirname "$0")/../tests/e2e"
if [ -f package.json ] && [ ! -d node_modules/openai ]; then
  npm ci --no-audit --no-fund --loglevel=error || npm install --no-audit --no-fund --loglevel=error
fi
