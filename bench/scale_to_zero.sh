#!/usr/bin/env bash
# Scale to zero and back (issue 14 items 2 and 3): a gateway with `executor = "local"` for the
# bundled stories260K, on a throwaway PostgreSQL and redis-server on loopback. Measures
#   - RSS of the gateway plus its worker processes at zero replicas and with one ready replica,
#   - request → first token of a streamed completion on a cold start (model at zero), ROUNDS
#     times (waiting for zero between rounds), and warm for comparison,
#   - the cold start as the gateway reports it (the `: x-gantry-cold-start-ms N` comment).
#
#   ROUNDS=5 bench/scale_to_zero.sh [BUILD_DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-$here/../build}"
bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
tmp="$(mktemp -d /tmp/gantry-s2z-bench-XXXXXX)"
as=""
if [ "$(id -u)" -eq 0 ]; then chmod 777 "$tmp"; chown postgres "$tmp"; as="runuser -u postgres --"; fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pg_port=$(free_port); redis_port=$(free_port); port=$(free_port)
gw_pid=""; redis_pid=""
cleanup() {
  [ -n "$gw_pid" ] && kill -TERM "$gw_pid" 2>/dev/null && wait "$gw_pid" 2>/dev/null || true
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
  $as "$bin/pg_ctl" -D "$tmp/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
$as "$bin/initdb" -D "$tmp/pg" -U gantry --auth=trust -E UTF8 --no-locale >/dev/null
$as "$bin/pg_ctl" -D "$tmp/pg" -l "$tmp/pg.log" -w -o "-p $pg_port -k $tmp -c listen_addresses=127.0.0.1" start >/dev/null
"$bin/createdb" -h 127.0.0.1 -p "$pg_port" -U gantry gantry
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
redis_pid=$!
db="postgresql://gantry@127.0.0.1:$pg_port/gantry"
export GANTRY_KEY_PEPPER=scale-to-zero-bench-pepper-0123456789
export GANTRY_WORKER_TOKEN=scale-to-zero-bench-token-0123456789
key=$("$build/gantry" keys create --project bench --json --database-url "$db" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
mkdir -p "$tmp/data"
cat > "$tmp/gantry.toml" <<EOF
request_log = "off"
worker_heartbeat_ms = 200
worker_ttl_ms = 1000
drain_s = 5
[[models]]
name = "stories260K"
path = "$here/../models/stories260K.gguf"
[autoscale.stories260K]
min_replicas = 0
max_replicas = 1
downscale_to_zero_delay_s = 3
executor = "local"
EOF
"$build/gantry" serve --config "$tmp/gantry.toml" --role gateway --port "$port" \
  --data-dir "$tmp/data" --redis-url "redis://127.0.0.1:$redis_port" --database-url "$db" \
  --no-cache >"$tmp/gw.out" 2>"$tmp/gw.err" &
gw_pid=$!
for _ in $(seq 100); do grep -q "Gantry listening" "$tmp/gw.out" 2>/dev/null && break; sleep 0.1; done
ROUNDS="${ROUNDS:-5}" python3 - "$port" "$key" "$gw_pid" <<'PY'
import http.client, json, os, statistics, sys, time
port, key, gw = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])

def children():
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = open(f"/proc/{p}/stat").read()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if int(fields[1]) == gw and fields[0] != "Z":
                out.append(int(p))
    return out

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0

def wait_zero(limit=60):
    end = time.time() + limit
    while time.time() < end:
        if not children():
            return True
        time.sleep(0.1)
    raise SystemExit("the worker did not exit")

def stream():
    body = json.dumps({"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 16,
                       "stream": True})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", body, {"Authorization": "Bearer " + key,
                                                "Content-Type": "application/json"})
    r = c.getresponse()
    first, cold = None, None
    for raw in r:
        line = raw.decode().strip()
        if line.startswith(": x-gantry-cold-start-ms"):
            cold = int(line.split()[-1])
        if first is None and line.startswith("data: {") and '"text":"' in line:
            first = (time.perf_counter() - t0) * 1000
    c.close()
    return first, cold

rounds = int(os.environ["ROUNDS"])
wait_zero()
time.sleep(0.5)
at_zero = rss_kib(gw)
cold, reported, warm, ready_rss = [], [], [], []
for _ in range(rounds):
    wait_zero()
    ms, held = stream()
    cold.append(ms); reported.append(held)
    kids = children()
    ready_rss.append((rss_kib(gw), sum(rss_kib(k) for k in kids), len(kids)))
    ms, held = stream()
    assert held is None, "a warm request was held"
    warm.append(ms)
gw_ready, workers, n = ready_rss[-1]
print(f"rounds {rounds}")
print(f"RSS at zero replicas: gateway {at_zero/1024:.1f} MiB, no worker process")
print(f"RSS with one ready replica: gateway {gw_ready/1024:.1f} MiB + {n} worker {workers/1024:.1f} MiB"
      f" = {(gw_ready+workers)/1024:.1f} MiB")
print(f"cold start, request -> first token: median {statistics.median(cold):.0f} ms "
      f"(min {min(cold):.0f}, max {max(cold):.0f}); each: {', '.join(f'{x:.0f}' for x in cold)}")
print(f"x-gantry-cold-start-ms reported: median {statistics.median(reported):.0f} ms")
print(f"warm, request -> first token: median {statistics.median(warm):.1f} ms")
PY
