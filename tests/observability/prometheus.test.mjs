// A real Prometheus scraping a real Gantry on 127.0.0.1, with deploy/observability's alert rules
// loaded: TTFT p99 from Gantry's histogram is a number, every PromQL expression of the Grafana
// dashboard and of the alert rules evaluates without error, and every gantry:* name they use is
// one that /metrics really serves.
//
//   node tests/observability/prometheus.test.mjs build/gantry
//
// Exits 77 (ctest: skipped) only when the prometheus binary is not installed.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { complete, scriptedTraffic, startGantry } from './gantry.mjs';

const binary = process.argv[2];
const deploy = new URL('../../deploy/observability/', import.meta.url).pathname;
if (spawnSync('prometheus', ['--version']).error) {
  console.log('SKIP: prometheus is not installed (apt-get install prometheus)');
  process.exit(77);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const freePort = () =>
  new Promise((ok) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });

let failures = 0;
function check(ok, what) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures++;
}

const gantry = await startGantry(binary);
const dir = mkdtempSync(join(tmpdir(), 'gantry-prom-'));
let prom = null;
try {
  const target = new URL(gantry.url).host;
  const port = await freePort();
  writeFileSync(
    join(dir, 'prometheus.yml'),
    `global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n` +
      `rule_files:\n  - ${join(deploy, 'gantry-alerts.yml')}\n` +
      `scrape_configs:\n  - job_name: gantry\n    static_configs:\n      - targets: ["${target}"]\n`,
  );
  prom = spawn('prometheus', [
    `--config.file=${join(dir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let promLog = '';
  prom.stderr.on('data', (d) => (promLog += d));
  const api = `http://127.0.0.1:${port}/api/v1`;
  const query = async (expr) => {
    const r = await fetch(`${api}/query?query=${encodeURIComponent(expr)}`);
    return r.json();
  };
  const until = async (what, fn, ms = 30000) => {
    const end = Date.now() + ms;
    let last;
    while (Date.now() < end) {
      try {
        last = await fn();
        if (last) return last;
      } catch (e) {
        last = e;
      }
      await sleep(500);
    }
    throw new Error(`timed out waiting for ${what}: ${last}\n${promLog.slice(-2000)}`);
  };

  // A histogram series is born with its first observation, so rate() sees only what comes
  // after its first scrape: one call creates the series, the scripted traffic follows once
  // Prometheus holds it.
  check((await complete(gantry.url)) === 200, 'a first completion');
  await until('the first scrape of the TTFT histogram', async () => {
    const r = await query('gantry:time_to_first_token_seconds_count');
    return r.status === 'success' && r.data.result.length === 1;
  });
  const { statuses } = await scriptedTraffic(gantry.url);
  console.log('traffic:', JSON.stringify(statuses));

  const ttft = 'histogram_quantile(0.99, rate(gantry:time_to_first_token_seconds_bucket[1m]))';
  const value = await until('a TTFT p99', async () => {
    const r = await query(ttft);
    const v = r.status === 'success' && r.data.result.length ? Number(r.data.result[0].value[1]) : NaN;
    return Number.isFinite(v) ? v : null;
  });
  check(Number.isFinite(value) && value > 0, `${ttft} = ${value}`);

  // The names /metrics serves (histograms also as _bucket, _sum, _count).
  const metricsText = await (await fetch(gantry.url + '/metrics')).text();
  const served = new Set();
  for (const m of metricsText.matchAll(/^# TYPE (gantry:[a-z0-9_]+) (\w+)/gm)) {
    served.add(m[1]);
    if (m[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) served.add(m[1] + s);
  }
  const namesOk = (expr, where) => {
    for (const [name] of expr.matchAll(/gantry:[a-z0-9_]+/g)) check(served.has(name), `${where}: ${name} is served by /metrics`);
  };

  const dashboard = JSON.parse(readFileSync(join(deploy, 'grafana-dashboard.json'), 'utf8'));
  let n = 0;
  for (const panel of dashboard.panels) {
    for (const t of panel.targets || []) {
      const expr = t.expr.replaceAll('$__rate_interval', '1m').replaceAll('$__interval', '15s');
      const r = await query(expr);
      check(r.status === 'success', `grafana "${panel.title}" ${t.refId}: ${r.status}${r.error ? ' ' + r.error : ''}`);
      namesOk(expr, `grafana "${panel.title}"`);
      n++;
    }
  }
  check(n >= 20, `the Grafana dashboard has ${n} queries`);

  // The alert rules, as loaded and evaluated by Prometheus itself, and each query once more.
  const rules = await until('every rule evaluated', async () => {
    const r = await (await fetch(`${api}/rules`)).json();
    const all = r.data.groups.flatMap((g) => g.rules);
    return all.length && all.every((x) => !x.lastEvaluation.startsWith('0001')) ? all : null;
  });
  check(rules.length >= 15, `${rules.length} alert rules loaded`);
  for (const rule of rules) {
    check(rule.health === 'ok', `rule ${rule.name}: health ${rule.health}${rule.lastError ? ' ' + rule.lastError : ''}`);
    const r = await query(rule.query);
    check(r.status === 'success', `rule ${rule.name}: query ${r.status}${r.error ? ' ' + r.error : ''}`);
    namesOk(rule.query, `rule ${rule.name}`);
  }
  // The scripted traffic opened the spend-rate breaker: its alert fires against the live data.
  const breaker = await until('GantrySpendBreakerOpen firing', async () => {
    const r = await (await fetch(`${api}/alerts`)).json();
    return r.data.alerts.find((a) => a.labels.alertname === 'GantrySpendBreakerOpen' && a.state === 'firing');
  });
  check(breaker.labels.model_name === 'stories260K', 'GantrySpendBreakerOpen fires for the model');
} finally {
  if (prom) {
    prom.kill('SIGTERM');
    await new Promise((ok) => prom.on('exit', ok));
  }
  rmSync(dir, { recursive: true, force: true });
  await gantry.stop();
}
if (failures) {
  console.log(`${failures} check(s) failed`);
  process.exit(1);
}
console.log('prometheus: passed');
