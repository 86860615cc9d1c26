#!/usr/bin/env bash
# Runs the official `openai` and `@anthropic-ai/sdk` npm clients' tests (*.test.mjs) against a real server:
# starts `gantry serve --port 0`, exports its URL as GANTRY_BASE_URL, runs `node --test`, then
# stops the server with SIGTERM and checks that it exits 0.
#
#   tests/e2e/run_e2e.sh build/gantry
#
# Fails (never skips) when Node.js or the npm client is missing: `make test` installs them.
#
# With GANTRY_TEST_STORE=postgresql (ctest's e2e_openai_sdk_pg) both servers keep their state in
# a database of their own in the PostgreSQL cluster recorded in $GANTRY_TEST_PG_CLUSTER (the
# gantry_pg fixture, tests/support/pg_test_cluster.cpp); the databases are dropped at the end.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:?usage: run_e2e.sh PATH_TO_GANTRY_BINARY}"

fail() {
  echo "e2e: FAIL: $*" >&2
  exit 1
}

command -v node >/dev/null 2>&1 ||
  fail "node is not installed; the end-to-end test needs Node.js >= 20 (run scripts/bootstrap.sh)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || fail "Node.js >= 20 is required, found $(node --version)"
for pkg in openai @anthropic-ai/sdk ajv zod; do
  if [ ! -d "$here/node_modules/$pkg" ]; then
    "$here/../../scripts/test_deps.sh" || fail "could not install the e2e npm packages"
  fi
  [ -d "$here/node_modules/$pkg" ] || fail "tests/e2e/node_modules/$pkg is missing"
done
[ -x "$bin" ] || fail "no gantry binary at $bin"

store_args=()
gw_store_args=()
pg_port=""
pg_bin=/usr/lib/postgresql/15/bin
dbs=()
case "${GANTRY_TEST_STORE:-sqlite}" in
sqlite) ;;
postgresql | postgres)
  pg_port="$(cat "${GANTRY_TEST_PG_CLUSTER:-/nonexistent}/port" 2>/dev/null)" ||
    fail "GANTRY_TEST_STORE=postgresql needs the cluster of \$GANTRY_TEST_PG_CLUSTER (run it as ctest -R e2e_openai_sdk_pg)"
  for role in server gateway; do
    db="e2e_$$_${role}"
    "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U gantry "$db" || fail "createdb $db failed"
    dbs+=("$db")
  done
  store_args=(--database-url "postgresql://gantry@127.0.0.1:$pg_port/${dbs[0]}")
  gw_store_args=(--database-url "postgresql://gantry@127.0.0.1:$pg_port/${dbs[1]}")
  ;;
*) fail "GANTRY_TEST_STORE=$GANTRY_TEST_STORE: expected sqlite or postgresql" ;;
esac

tmp="$(mktemp -d /tmp/gantry-e2e-XXXXXX)"
pid=""
gw_pid=""
cleanup() {
  if [ -n "$gw_pid" ] && kill -0 "$gw_pid" 2>/dev/null; then
    kill -KILL "$gw_pid" 2>/dev/null || true
  fi
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
  for db in "${dbs[@]}"; do
    "$pg_bin/dropdb" --force -h 127.0.0.1 -p "$pg_port" -U gantry "$db" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

# The server reads GANTRY_* variables; the test's server must not pick up a developer's.
for v in $(compgen -e | grep '^GANTRY_' || true); do
  [ "$v" = GANTRY_BASE_URL ] || unset "$v"
done
# The bundled model, and a random-weight model with Llama's 32000-token vocabulary (structured
# outputs are checked on both vocabularies).
"$bin" serve --port 0 --data-dir "$tmp/data" --threads 1 "${store_args[@]}" \
  --model "stories260K=$here/../../models/stories260K.gguf" \
  --model "llama-tiny=$here/../data/llama-2-tiny-random.gguf" >"$tmp/stdout" 2>"$tmp/stderr" &
pid=$!

url=""
for _ in $(seq 300); do # up to 30 s for the model to load
  url="$(sed -n 's/^Gantry listening on \(http:\/\/[^ ]*\).*/\1/p' "$tmp/stdout" | head -n1)"
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || {
    cat "$tmp/stderr" >&2
    fail "gantry serve exited before listening"
  }
  sleep 0.1
done
[ -n "$url" ] || fail "gantry serve did not print its listening line within 30 s"
echo "e2e: gantry serve at $url (pid $pid)"

# A second server in front of the first: its only model is remote (issue 12).
# The upstream serves two models, so the gateway's config names the one behind "remote".
cat >"$tmp/gateway.toml" <<EOF
[[models]]
name = "remote"
backends = [{ url = "$url/v1", model = "stories260K" }]
EOF
"$bin" serve --port 0 --data-dir "$tmp/gateway" --threads 1 --config "$tmp/gateway.toml" "${gw_store_args[@]}" \
  >"$tmp/gw-stdout" 2>"$tmp/gw-stderr" &
gw_pid=$!
gw_url=""
for _ in $(seq 300); do
  gw_url="$(sed -n 's/^Gantry listening on \(http:\/\/[^ ]*\).*/\1/p' "$tmp/gw-stdout" | head -n1)"
  [ -n "$gw_url" ] && break
  kill -0 "$gw_pid" 2>/dev/null || {
    cat "$tmp/gw-stderr" >&2
    fail "the gateway (gantry serve --model remote=...) exited before listening"
  }
  sleep 0.1
done
[ -n "$gw_url" ] || fail "the gateway did not print its listening line within 30 s"
echo "e2e: gateway with a remote model at $gw_url (pid $gw_pid)"

set +e
GANTRY_BASE_URL="$url" GANTRY_REMOTE_BASE_URL="$gw_url" node --test --test-reporter=spec \
  "$here/openai_sdk.test.mjs" "$here/cache_embeddings.test.mjs" "$here/batch_jobs.test.mjs" \
  "$here/remote_model.test.mjs" "$here/responses_api.test.mjs" "$here/anthropic_messages.test.mjs" \
  "$here/structured_outputs.test.mjs" "$here/tool_calling.test.mjs" "$here/logprobs.test.mjs"
rc=$?
set -e
kill -TERM "$gw_pid" 2>/dev/null || true
wait "$gw_pid" 2>/dev/null || true
gw_pid=""

kill -TERM "$pid"
exit_code=0
for _ in $(seq 100); do # the grace: 10 s
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
  fail "gantry serve did not exit within 10 s of SIGTERM"
fi
wait "$pid" || exit_code=$?
pid=""
if [ "$exit_code" -ne 0 ]; then
  cat "$tmp/stderr" >&2
  fail "gantry serve exited with $exit_code after SIGTERM"
fi
[ "$rc" -eq 0 ] || fail "node --test failed (exit $rc)"
echo "e2e: passed"
