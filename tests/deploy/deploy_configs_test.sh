#!/usr/bin/env bash
# The deployment assets in deploy/ checked with what runs here (issue 13, item 5):
#   nginx -t        on deploy/nginx/gantry.conf inside a minimal nginx.conf (loopback upstreams);
#   systemd-analyze verify  on deploy/systemd/*.service (ExecStart pointed at the built binary);
#   check_k8s.py    on deploy/k8s/*.yaml.
# Each checker is also shown a broken copy and must reject it, so a checker that passes
# everything cannot hide behind this test.
#
#   tests/deploy/deploy_configs_test.sh SOURCE_DIR GANTRY_BINARY
set -euo pipefail
src=${1:?source dir}
bin=${2:?gantry binary}
tmp=$(mktemp -d /tmp/gantry-deploy-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "deploy: FAIL: $*" >&2; exit 1; }

# --- nginx
nginx_check() { # conf-file → exit status of nginx -t
  mkdir -p "$tmp/ngx"
  cat >"$tmp/ngx/nginx.conf" <<CONF
pid $tmp/ngx/nginx.pid;
error_log $tmp/ngx/error.log;
events {}
http {
  client_body_temp_path $tmp/ngx/body; proxy_temp_path $tmp/ngx/proxy;
  fastcgi_temp_path $tmp/ngx/f; uwsgi_temp_path $tmp/ngx/u; scgi_temp_path $tmp/ngx/s;
  include $1;
}
CONF
  /usr/sbin/nginx -t -q -p "$tmp/ngx" -c "$tmp/ngx/nginx.conf" 2>"$tmp/ngx/out"
}
# Listening on 80 needs root; the check only needs a port it may bind.
sed 's/^  listen 80;/  listen 127.0.0.1:18080;/' "$src/deploy/nginx/gantry.conf" >"$tmp/gantry.conf"
grep -q 'proxy_buffering off' "$tmp/gantry.conf" || fail "gantry.conf must not buffer SSE"
nginx_check "$tmp/gantry.conf" || { cat "$tmp/ngx/out" >&2; fail "nginx -t rejects deploy/nginx/gantry.conf"; }
sed 's/least_conn;/least_conn_typo;/' "$tmp/gantry.conf" >"$tmp/broken.conf"
if nginx_check "$tmp/broken.conf"; then fail "nginx -t accepted a broken copy"; fi
echo "deploy: nginx -t ok"

# --- systemd
mkdir -p "$tmp/units"
for u in "$src"/deploy/systemd/*.service; do
  sed "s#/usr/local/bin/gantry#$bin#" "$u" >"$tmp/units/$(basename "$u")"
done
ls "$tmp"/units/*.service >/dev/null || fail "no units in deploy/systemd"
for u in "$tmp"/units/*.service; do
  grep -q '^Restart=' "$u" || fail "$(basename "$u") has no Restart="
  grep -q '^NoNewPrivileges=yes' "$u" || fail "$(basename "$u") is not hardened"
done
if ! out=$(systemd-analyze verify "$tmp"/units/*.service 2>&1); then
  echo "$out" >&2
  fail "systemd-analyze verify rejects deploy/systemd"
fi
[ -z "$out" ] || { echo "$out" >&2; fail "systemd-analyze verify printed warnings"; }
sed 's/^Restart=on-failure/Restart=sometimes/' "$tmp/units/gantry-gateway.service" >"$tmp/units-bad.service"
if [ -z "$(systemd-analyze verify "$tmp/units-bad.service" 2>&1)" ]; then
  fail "systemd-analyze verify accepted a broken unit"
fi
echo "deploy: systemd-analyze verify ok"

# --- Kubernetes
python3 "$src/tests/deploy/check_k8s.py" "$src/deploy/k8s" "$src" || fail "deploy/k8s is inconsistent"
mkdir -p "$tmp/k8s"
cp "$src"/deploy/k8s/*.yaml "$tmp/k8s/"
# Only the Service's selector (the one line that starts "  selector: {"): it then matches no pod.
sed -i 's/^  selector: {\(.*\)component: gateway}$/  selector: {\1component: gatewy}/' "$tmp/k8s/gateway.yaml"
grep -q 'component: gatewy' "$tmp/k8s/gateway.yaml" || fail "could not break the copy"
if python3 "$src/tests/deploy/check_k8s.py" "$tmp/k8s" "$src" >/dev/null; then
  fail "check_k8s.py accepted a Service whose selector matches nothing"
fi
# A worker without the internal token (the gateways' calls would all be refused): rejected.
cp "$src"/deploy/k8s/*.yaml "$tmp/k8s/"
python3 - "$tmp/k8s/worker.yaml" <<'PY'
import sys
p = sys.argv[1]
lines = open(p).read().split('\n')
i = next(n for n, l in enumerate(lines) if 'name: GANTRY_WORKER_TOKEN' in l)
del lines[i:i + 2]
open(p, 'w').write('\n'.join(lines))
PY
grep -q GANTRY_WORKER_TOKEN "$tmp/k8s/worker.yaml" && fail "could not break the worker copy"
if python3 "$src/tests/deploy/check_k8s.py" "$tmp/k8s" "$src" >/dev/null; then
  fail "check_k8s.py accepted a worker without the internal token"
fi
# KEDA (issue 14 item 4): each broken copy of keda.yaml must be rejected.
keda_broken() { # sed expression, what it breaks
  cp "$src"/deploy/k8s/*.yaml "$tmp/k8s/"
  sed -i "$1" "$tmp/k8s/keda.yaml"
  cmp -s "$src/deploy/k8s/keda.yaml" "$tmp/k8s/keda.yaml" && fail "could not break keda.yaml: $2"
  if python3 "$src/tests/deploy/check_k8s.py" "$tmp/k8s" "$src" >/dev/null; then
    fail "check_k8s.py accepted a ScaledObject with $2"
  fi
}
keda_broken 's/query: max(/query: sum(/' "the gateways' answers summed"
keda_broken 's/gantry:desired_replicas{/gantry:desired_replica{/' "a metric Gantry does not export"
keda_broken 's/minReplicaCount: 0/minReplicaCount: 1/' "no scale to zero"
keda_broken 's/    name: gantry-worker$/    name: gantry-workers/' "a target that is no Deployment"
keda_broken 's/=~"llama"/=~"mistral"/' "a model the Deployment does not host"
keda_broken 's/stabilizationWindowSeconds: 0/stabilizationWindowSeconds: 300/' "a second delay"
echo "deploy: k8s ok"
