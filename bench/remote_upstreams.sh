# Sourced by bench/remote_overhead.sh and bench/remote_instructions.sh: a scratch directory
# cleaned on exit, free loopback ports, an nginx config writer, and the two upstreams both
# benchmarks proxy to, started on 127.0.0.1 — UP answers every chat completion with BODY_OUT, UPS
# every request with a fixed event stream (three content chunks, a usage chunk, [DONE]); both
# list one model, "up", at /v1/models. Sets tmp, pids, UP, UPS, REQ (a chat request for the model
# "bench"), TOKEN (the admin token the benchmarks start Gantry with); callers add their own
# processes to pids. Helpers: start_proxy (nginx proxy_pass in front of an upstream) and
# bench_key (a key with a budget on a running Gantry).
tmp=$(mktemp -d /tmp/gantry-remote-bench-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

BODY_OUT='{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, this is a fixed answer."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}'
REQ='{"model":"bench","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
TOKEN=bench-admin-token-0123456789abcdef

nginx_conf() { # dir port server-body [http-block additions]
  mkdir -p "$1"
  cat >"$1/nginx.conf" <<CONF
daemon off;
worker_processes 1;
user root;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1/body; proxy_temp_path $1/proxy; fastcgi_temp_path $1/f;
  uwsgi_temp_path $1/u; scgi_temp_path $1/s;
  keepalive_requests 1000000;
  ${4:-}
  server { listen 127.0.0.1:$2; $3 }
}
CONF
}
MODELS_LOC="location = /v1/models { default_type application/json; return 200 '{\"object\":\"list\",\"data\":[{\"id\":\"up\"}]}'; }"
UP=$(free_port)
nginx_conf "$tmp/up" "$UP" "$MODELS_LOC
  location / { default_type application/json; return 200 '$BODY_OUT'; }"
nginx -p "$tmp/up" -c "$tmp/up/nginx.conf" & pids+=($!)
# The streamed upstream: one fixed event stream for every request (nginx sends it at once; what
# is measured is how long each proxy takes to pass its first content chunk on).
chunk() { printf 'data: {"id":"chatcmpl-s","object":"chat.completion.chunk","created":1,"model":"up","choices":[{"index":0,"delta":{%s},"finish_reason":%s}]}\\n\\n' "$1" "$2"; }
SSE_OUT="$(chunk '"role":"assistant","content":"Hello"' null)$(chunk '"content":" there"' null)$(chunk '"content":"."' null)$(chunk '' '"stop"')"
SSE_OUT+='data: {"id":"chatcmpl-s","object":"chat.completion.chunk","created":1,"model":"up","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}\n\ndata: [DONE]\n\n'
UPS=$(free_port)
nginx_conf "$tmp/ups" "$UPS" "$MODELS_LOC
  location / { default_type text/event-stream; return 200 '$SSE_OUT'; }"
nginx -p "$tmp/ups" -c "$tmp/ups/nginx.conf" & pids+=($!)

# start_proxy NAME PORT UPSTREAM_PORT [extra location directives]: nginx proxy_pass to the
# upstream on a kept-alive pool of 64, in $tmp/NAME.
start_proxy() {
  nginx_conf "$tmp/$1" "$2" "
  location / { proxy_pass http://$1_up; proxy_http_version 1.1; proxy_set_header Connection \"\"; ${4:-} }" \
    "upstream $1_up { server 127.0.0.1:$3; keepalive 64; }"
  nginx -p "$tmp/$1" -c "$tmp/$1/nginx.conf" &
  pids+=($!)
}

# bench_key PORT: waits for the Gantry on PORT (started with GANTRY_ADMIN_TOKEN=$TOKEN), creates a
# key with limits far above any benchmark's rate and a project budget (so both are checked on
# every call), waits for the key watcher's poll and prints the key.
bench_key() {
  local key
  for _ in $(seq 1200); do curl -fs "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  key=$(curl -fs -X POST "http://127.0.0.1:$1/admin/v1/keys" -H "Authorization: Bearer $TOKEN" \
    -d '{"project":"bench","rpm":100000000,"tpm":100000000000}' | python3 -c 'import sys,json; print(json.load(sys.stdin)["key"])')
  curl -fs -X POST "http://127.0.0.1:$1/admin/v1/budgets" -H "Authorization: Bearer $TOKEN" \
    -d '{"owner_kind":"project","owner_id":"bench","period":"month","token_quota":1000000000000}' >/dev/null
  sleep 0.6 # the key watcher's poll
  echo "$key"
}
