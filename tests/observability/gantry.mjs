// Starts the real `gantry serve` for the observability tests: port 0 on 127.0.0.1, a fresh data
// directory, an admin token, status probes every second, and a model priced so that scripted
// traffic spends money, crosses a budget's marks and opens the spend-rate breaker (whose 503s
// land in the error tracker). stop() sends SIGTERM and checks the exit status.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ADMIN_TOKEN = 'obs-admin-token-0123456789abcdef0123456789';
export const MODEL = 'stories260K';

export async function startGantry(binary) {
  const dir = mkdtempSync(join(tmpdir(), 'gantry-obs-'));
  const model = resolve(new URL('../../models/stories260K.gguf', import.meta.url).pathname);
  const config = join(dir, 'gantry.toml');
  writeFileSync(
    config,
    [
      '[[models]]',
      `name = "${MODEL}"`,
      `path = "${model}"`,
      'threads = 1',
      'price_input_per_mtok = 10000.0',
      'price_output_per_mtok = 100000.0', // $0.10 a generated token
      'breaker_usd_per_minute = 3.0',
      'breaker_cooldown_s = 600',
      '',
    ].join('\n'),
  );
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('GANTRY_')) env[k] = v;
  env.GANTRY_ADMIN_TOKEN = ADMIN_TOKEN;
  env.GANTRY_STATUS_PROBE_S = '1';
  const child = spawn(binary, ['serve', '--port', '0', '--host', '127.0.0.1', '--data-dir', join(dir, 'data'), '--config', config], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '', stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const url = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error('gantry did not listen within 30 s\n' + stderr)), 30000);
    child.stdout.on('data', (d) => {
      stdout += d;
      const m = /Gantry listening on (http:\/\/[^ \n]+)/.exec(stdout);
      if (m) {
        clearTimeout(timer);
        ok(m[1]);
      }
    });
    child.on('exit', (code) => fail(new Error(`gantry exited (${code}) before listening\n${stderr}`)));
  });
  const exited = new Promise((ok) => child.on('exit', (code, signal) => ok({ code, signal })));
  return {
    url,
    dir,
    stderr: () => stderr,
    async stop() {
      child.kill('SIGTERM');
      const timeout = setTimeout(() => child.kill('SIGKILL'), 15000);
      const r = await exited;
      clearTimeout(timeout);
      rmSync(dir, { recursive: true, force: true });
      if (r.code !== 0) throw new Error(`gantry exited with ${r.code ?? r.signal} after SIGTERM\n${stderr}`);
    },
  };
}

export async function admin(url, method, path, body) {
  const r = await fetch(url + path, {
    method,
    headers: { Authorization: 'Bearer ' + ADMIN_TOKEN, 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: HTTP ${r.status}: ${text}`);
  return JSON.parse(text);
}

export async function complete(url, key, extra = {}) {
  const r = await fetch(url + '/v1/completions', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...(key ? { Authorization: 'Bearer ' + key } : {}) },
    body: JSON.stringify({ model: MODEL, prompt: 'Once upon a time', max_tokens: 4, ...extra }),
  });
  await r.text();
  return r.status;
}

// The scripted mix: a key in project "acme" with a $5/day budget, completions that spend
// ($0.40 each), a 404 (unknown model), then enough spend to open the breaker: its 503s become an
// error group. Returns the statuses seen.
export async function scriptedTraffic(url) {
  const key = await admin(url, 'POST', '/admin/v1/keys', { project: 'acme', name: 'dashboard-test' });
  await admin(url, 'POST', '/admin/v1/budgets', {
    owner_kind: 'project',
    owner_id: 'acme',
    period: 'day',
    spend_limit_usd: 5,
  });
  const statuses = {};
  const count = (s) => (statuses[s] = (statuses[s] || 0) + 1);
  for (let i = 0; i < 10; i++) count(await complete(url, key.key, { ignore_eos: true }));
  count(await complete(url, key.key, { model: 'no-such-model' }));
  for (let i = 0; i < 6; i++) count(await complete(url, key.key, { ignore_eos: true }));
  return { statuses, keyId: key.id };
}
