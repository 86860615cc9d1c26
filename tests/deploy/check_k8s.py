#!/usr/bin/env python3
"""Offline structural check of deploy/k8s/*.yaml (issue 13 item 5, issue 14 item 4).

No cluster here, so this checks what `kubectl apply` and a reviewer would catch: every document
has apiVersion/kind/name; a Deployment's selector matches its pod labels, every probe and
Service targetPort names a declared container port, secrets are referenced by name and key;
Services, PodDisruptionBudgets and KEDA ScaledObjects point at a Deployment that exists here,
and a ScaledObject scales on Gantry's own gantry:desired_replicas. Roles (issue 13): a node with
`--role gateway|worker` gets Redis, PostgreSQL and the internal worker token from Secrets, a
worker announces a reachable `--advertise-url`, and gateways have workers to route to. Exits 1
naming each problem.

  tests/deploy/check_k8s.py deploy/k8s [SOURCE_DIR]   (SOURCE_DIR/src: the exported metric names)
"""
import glob
import os
import re
import sys

import yaml

KNOWN = {
    ('apps/v1', 'Deployment'), ('v1', 'Service'), ('policy/v1', 'PodDisruptionBudget'),
    ('keda.sh/v1alpha1', 'ScaledObject'), ('v1', 'Secret'), ('v1', 'ConfigMap'),
}


def subset(a, b):
    return all(b.get(k) == v for k, v in (a or {}).items())


def exported_metrics(source_dir):
    """The gantry:* metric families the server renders (a `# TYPE name` line in src/)."""
    names = set()
    for path in glob.glob(os.path.join(source_dir, 'src', '**', '*.cpp'), recursive=True):
        with open(path, errors='replace') as f:
            names.update(re.findall(r'# TYPE (gantry:[a-z_]+) ', f.read()))
    return names


def check_scaled_object(w, spec, deployments, metrics):
    """Issue 14 item 4: KEDA follows Gantry's policy exactly."""
    problems = []
    target = (spec.get('scaleTargetRef') or {}).get('name')
    if target not in deployments:
        problems.append(f'{w}: scaleTargetRef {target} is not a Deployment here')
    if spec.get('minReplicaCount') != 0:
        problems.append(f'{w}: minReplicaCount must be 0 (the policy scales to zero)')
    mx = spec.get('maxReplicaCount')
    if not isinstance(mx, int) or mx < 1:
        problems.append(f'{w}: maxReplicaCount must be a positive integer (the policy\'s max_replicas)')
    for key in ('pollingInterval', 'cooldownPeriod'):
        v = spec.get(key)
        if not isinstance(v, int) or v < 1 or v > 60:
            problems.append(f'{w}: {key} must be 1..60 s (the policy already waited its delays)')
    behavior = (((spec.get('advanced') or {}).get('horizontalPodAutoscalerConfig') or {})
                .get('behavior') or {})
    for way in ('scaleUp', 'scaleDown'):
        if (behavior.get(way) or {}).get('stabilizationWindowSeconds') != 0:
            problems.append(f'{w}: behavior.{way}.stabilizationWindowSeconds must be 0 '
                            '(a second delay on top of the policy\'s)')
    trig = [t for t in spec.get('triggers') or [] if t.get('type') == 'prometheus']
    if len(trig) != 1 or len(spec.get('triggers') or []) != 1:
        problems.append(f'{w}: needs exactly one trigger, prometheus on gantry:desired_replicas')
        return problems
    md = trig[0].get('metadata') or {}
    query = str(md.get('query', ''))
    used = set(re.findall(r'gantry:[a-z_]+', query))
    if used != {'gantry:desired_replicas'}:
        problems.append(f'{w}: the query must read gantry:desired_replicas only, reads {sorted(used)}')
    for name in used - metrics:
        problems.append(f'{w}: the query names {name}, which Gantry does not export')
    if not re.match(r'^\s*max\s*\(', query):
        problems.append(f'{w}: the query must aggregate the gateways with max(...): each exports '
                        'the same decision, a sum would multiply it')
    m = re.search(r'model_name\s*(=~|=)\s*"([^"]*)"', query)
    hosted = ((deployments.get(target, (None, {}))[1].get('metadata') or {}).get('annotations')
              or {}).get('gantry.dev/models')
    if not m:
        problems.append(f'{w}: the query must select model_name')
    elif not hosted:
        problems.append(f'{w}: Deployment {target} has no gantry.dev/models annotation to check '
                        'the query against')
    else:
        want = sorted(x.strip() for x in str(hosted).split(',') if x.strip())
        got = sorted(m.group(2).split('|')) if m.group(1) == '=~' else [m.group(2)]
        if got != want:
            problems.append(f'{w}: the query selects models {got}, Deployment {target} hosts {want}')
    if str(md.get('threshold')) != '1' or trig[0].get('metricType', 'AverageValue') != 'AverageValue':
        problems.append(f'{w}: threshold "1" with metricType AverageValue: one replica per unit')
    if str(md.get('activationThreshold', '0')) != '0':
        problems.append(f'{w}: activationThreshold must be "0" (one replica asked for wakes it)')
    if str(md.get('ignoreNullValues', 'true')).lower() != 'false':
        problems.append(f'{w}: ignoreNullValues must be "false": no data is not a zero')
    if not str(md.get('serverAddress', '')).startswith(('http://', 'https://')):
        problems.append(f'{w}: serverAddress must be the Prometheus URL')
    return problems


def check(directory, source_dir=None):
    metrics = exported_metrics(source_dir or os.path.join(directory, '..', '..'))
    if 'gantry:desired_replicas' not in metrics:
        return [f'gantry:desired_replicas is not rendered anywhere under {source_dir}/src']
    problems = []
    docs = []
    for path in sorted(glob.glob(os.path.join(directory, '*.yaml'))):
        with open(path) as f:
            for i, d in enumerate(yaml.safe_load_all(f)):
                if d is None:
                    continue
                where = f'{os.path.basename(path)}#{i}'
                if not isinstance(d, dict):
                    problems.append(f'{where}: not a mapping')
                    continue
                kind, api = d.get('kind'), d.get('apiVersion')
                name = (d.get('metadata') or {}).get('name')
                if not name:
                    problems.append(f'{where}: metadata.name missing')
                if (api, kind) not in KNOWN:
                    problems.append(f'{where}: unexpected apiVersion/kind {api}/{kind}')
                docs.append((where, d))
    if not docs:
        problems.append(f'no manifests in {directory}')
    deployments = {d['metadata']['name']: (w, d) for w, d in docs if d.get('kind') == 'Deployment'}
    pod_labels = {}
    for name, (w, d) in deployments.items():
        spec = d.get('spec') or {}
        tmpl = spec.get('template') or {}
        labels = (tmpl.get('metadata') or {}).get('labels') or {}
        pod_labels[name] = labels
        sel = (spec.get('selector') or {}).get('matchLabels')
        if not sel or not subset(sel, labels):
            problems.append(f'{w}: selector.matchLabels {sel} does not match the pod labels {labels}')
        containers = (tmpl.get('spec') or {}).get('containers') or []
        if not containers:
            problems.append(f'{w}: no containers')
        for c in containers:
            cname = c.get('name', '?')
            if not c.get('image'):
                problems.append(f'{w}: container {cname} has no image')
            ports = {p.get('name') for p in c.get('ports') or []} | {p.get('containerPort') for p in c.get('ports') or []}
            for probe in ('startupProbe', 'readinessProbe', 'livenessProbe'):
                p = c.get(probe)
                if p is None:
                    if probe != 'startupProbe':
                        problems.append(f'{w}: container {cname} has no {probe}')
                    continue
                get = p.get('httpGet') or {}
                if get.get('port') not in ports:
                    problems.append(f'{w}: {probe} port {get.get("port")} is not a container port')
                if probe == 'readinessProbe' and get.get('path') != '/readyz':
                    problems.append(f'{w}: readinessProbe must use /readyz (it checks every dependency)')
            for e in c.get('env') or []:
                ref = ((e.get('valueFrom') or {}).get('secretKeyRef'))
                if ref is not None and not (ref.get('name') and ref.get('key')):
                    problems.append(f'{w}: env {e.get("name")} secretKeyRef needs name and key')
                if e.get('value') and any(s in e.get('name', '') for s in ('TOKEN', 'PASSWORD', 'URL')):
                    problems.append(f'{w}: env {e["name"]} holds a secret in plain text; use a secretKeyRef')
    roles = {}
    for name, (w, d) in deployments.items():
        for c in (((d.get('spec') or {}).get('template') or {}).get('spec') or {}).get('containers') or []:
            args = [str(a) for a in c.get('args') or []]
            if '--role' not in args:
                continue
            i = args.index('--role')
            role = args[i + 1] if i + 1 < len(args) else ''
            if role not in ('all', 'gateway', 'worker'):
                problems.append(f'{w}: --role {role!r} is not all, gateway or worker')
                continue
            roles[name] = role
            if role == 'all':
                continue
            secret_env = {e.get('name') for e in c.get('env') or []
                          if ((e.get('valueFrom') or {}).get('secretKeyRef'))}
            for need in ('GANTRY_REDIS_URL', 'GANTRY_DATABASE_URL', 'GANTRY_WORKER_TOKEN'):
                if need not in secret_env:
                    problems.append(f'{w}: --role {role} needs {need} from a Secret')
            if role == 'worker':
                if '--advertise-url' not in args:
                    problems.append(f'{w}: a worker needs --advertise-url (how gateways reach the pod)')
                else:
                    url = args[args.index('--advertise-url') + 1] if args.index('--advertise-url') + 1 < len(args) else ''
                    if not url.startswith(('http://', 'https://')) or not url.rstrip('/').endswith('/v1'):
                        problems.append(f'{w}: --advertise-url {url!r} must be http(s)://.../v1')
                    if '$(' in url:
                        var = url.split('$(', 1)[1].split(')', 1)[0]
                        if var not in {e.get('name') for e in c.get('env') or []}:
                            problems.append(f'{w}: --advertise-url uses $({var}), which no env var defines')
    scaled = [((d.get('spec') or {}).get('scaleTargetRef') or {}).get('name')
              for _, d in docs if d.get('kind') == 'ScaledObject']
    for name, role in roles.items():
        if role == 'worker' and scaled.count(name) != 1:
            problems.append(f'{deployments[name][0]}: a worker Deployment needs exactly one KEDA '
                            f'ScaledObject (has {scaled.count(name)})')
    if 'gateway' in roles.values() and 'worker' not in roles.values():
        problems.append('a --role gateway Deployment has no --role worker Deployment to route to')
    for w, d in docs:
        kind = d.get('kind')
        spec = d.get('spec') or {}
        if kind == 'Service':
            sel = spec.get('selector') or {}
            targets = [n for n, l in pod_labels.items() if sel and subset(sel, l)]
            if not targets:
                problems.append(f'{w}: selector {sel} matches no Deployment here')
            for p in spec.get('ports') or []:
                tp = p.get('targetPort')
                for n in targets:
                    cs = deployments[n][1]['spec']['template']['spec']['containers']
                    names = {q.get('name') for c in cs for q in c.get('ports') or []} | {q.get('containerPort') for c in cs for q in c.get('ports') or []}
                    if tp not in names:
                        problems.append(f'{w}: targetPort {tp} is not a port of {n}')
        elif kind == 'PodDisruptionBudget':
            sel = (spec.get('selector') or {}).get('matchLabels') or {}
            if not any(subset(sel, l) for l in pod_labels.values()):
                problems.append(f'{w}: selector {sel} matches no Deployment here')
            if 'minAvailable' not in spec and 'maxUnavailable' not in spec:
                problems.append(f'{w}: needs minAvailable or maxUnavailable')
        elif kind == 'ScaledObject':
            problems += check_scaled_object(w, spec, deployments, metrics)
    return problems


if __name__ == '__main__':
    found = check(sys.argv[1] if len(sys.argv) > 1 else 'deploy/k8s',
                  sys.argv[2] if len(sys.argv) > 2 else None)
    for p in found:
        print('k8s:', p)
    if found:
        sys.exit(1)
    print('k8s: ok')
