#!/usr/bin/env bash
# The include rules of ../shared/STYLE.md ("Gantry's layout"), checked on the code's own
# #include lines so the layering cannot rot silently. Each rule: the folder, then the include
# prefixes (or third-party headers) it must never name. Prints every violation; exit 1 if any.
set -uo pipefail
cd "$(dirname "$0")/.."

fail=0
# rule FOLDER PATTERN WHY — PATTERN is an extended regex matched against the included path.
rule() {
  local dir=$1 pattern=$2 why=$3
  [ -d "src/$dir" ] || return 0
  local hits
  hits=$(grep -rnE "^[[:space:]]*#[[:space:]]*include[[:space:]]*[<\"]($pattern)" "src/$dir" \
    --include='*.h' --include='*.cpp' || true)
  if [ -n "$hits" ]; then
    echo "layering: src/$dir must not include ($pattern): $why"
    echo "$hits" | sed 's/^/  /'
    fail=1
  fi
}

GANTRY='api/|http/|server/|control/|jobs/|cluster/|cache/|telemetry/|observe/|dashboard/|backends?/|store/|cli/'
THIRD_PARTY_IO='boost/|sqlite3\.h|libpq|postgresql/|hiredis/'

rule core "engine/|$GANTRY|$THIRD_PARTY_IO" "core depends on nothing else"
rule engine "$GANTRY|$THIRD_PARTY_IO" "the engine knows only core (no HTTP, JSON or Boost)"
rule api "http/|server/|control/|jobs/|cache/|store/|backends/|cli/|boost/beast|boost/asio|sqlite3\.h|libpq|hiredis/" \
  "api/ is wire formats only: never Beast/Asio or a store"
rule http "engine/|api/|server/|control/|jobs/|cache/|store/|backends/|cli/|sqlite3\.h|libpq|hiredis/" \
  "http/ knows nothing about models or state"
for d in control jobs cache cluster; do
  rule "$d" "server/|store/|backends/|cli/|http/|sqlite3\.h|libpq|postgresql/|hiredis/|boost/beast|boost/asio" \
    "$d/ is logic over the ports it declares; adapters live in store/ and are chosen in server/"
done
rule telemetry "server/|store/|backends/|cli/|control/|jobs/|sqlite3\.h|libpq|hiredis/" \
  "telemetry/ is the metrics registry and the request log only"
rule dashboard "server/|store/|backends/|cli/|http/|api/|control/|jobs/|engine/|$THIRD_PARTY_IO" \
  "dashboard/ is logic over plain values (the sample ring, the status history and its port)"
rule observe "server/|store/|backends/|cli/|engine/|sqlite3\.h|libpq|hiredis/" \
  "observe/ is error tracking and Sentry only"
rule backends "server/|cli/|store/|sqlite3\.h|libpq|hiredis/" \
  "backends/ are ModelBackend adapters: never the composition root or a store"
# backend/: the ModelBackend port (its top-level headers) and its adapters (local/, remote/...).
# Adapters may speak HTTP (a remote engine) but never reach the composition root, the control
# plane or a store: admission, caching and settlement live above the port, in server/.
rule backend "server/|cli/|store/|control/|jobs/|cache/cache\.h|cache/memory|sqlite3\.h|libpq|postgresql/|hiredis/" \
  "backend/ is the ModelBackend port and its adapters: never the service above it or a store"
hits=$(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](boost/|http/|engine/model|engine/batch)' \
  src/backend/*.h 2>/dev/null || true)
if [ -n "$hits" ]; then
  echo "layering: the port headers (src/backend/*.h) are core: no Boost, HTTP or engine internals"
  echo "$hits" | sed 's/^/  /'
  fail=1
fi
# backend/remote/: wire formats and pool policy are logic over bytes; the transport (Beast) is
# http/upstream.cpp, reached only through its Beast-free header.
rule backend/remote "boost/beast|boost/asio|engine/" \
  "backend/remote/ speaks HTTP only through http/upstream.h; Beast stays in http/"
rule store "server/|cli/|http/|api/|boost/beast|boost/asio" "store/ adapters implement ports only"
# autoscale/: the scaling policy is logic over a Clock and plain signals; the server reads the
# signals and carries decisions out (Boost.JSON only for the decision's log line).
rule autoscale "engine/|$GANTRY|boost/beast|boost/asio|sqlite3\.h|libpq|postgresql/|hiredis/" \
  "autoscale/ is the policy over plain signals: the server reads them and acts on its decisions"

# Below the composition root nothing includes it (server/gateway.h is the root's header).
hits=$(grep -rn '#include "server/gateway.h"' src --include='*.h' --include='*.cpp' |
  grep -v '^src/server/gateway\.\(h\|cpp\):' | grep -v '^src/cli/' || true)
if [ -n "$hits" ]; then
  echo "layering: only server/gateway.cpp and cli/ may include server/gateway.h"
  echo "$hits" | sed 's/^/  /'
  fail=1
fi

# SQLite's own header only inside the SQLite adapter folder.
hits=$(grep -rln --include='*.h' --include='*.cpp' 'sqlite3\.h' src | grep -v '^src/store/sqlite/' || true)
if [ -n "$hits" ]; then
  echo "layering: sqlite3.h outside src/store/sqlite/:"
  echo "$hits" | sed 's/^/  /'
  fail=1
fi

[ $fail -eq 0 ] && echo "layering: ok"
exit $fail
