// /dashboard and /status in a real browser: playwright-core drives Debian's chromium against a
// real Gantry. Signs in (a wrong token first: the form comes back with a clear message), checks
// that the numbers change after scripted traffic, that an error group and a budget bar with its
// 50/80/100 % marks show, saves a screenshot as a test artifact, loads /status and checks each
// model's state, and checks that no page requests anything off-host or trips the CSP.
//
//   node tests/observability/dashboard.test.mjs build/gantry [ARTIFACT_DIR]
//
// Exits 77 (ctest: skipped) only when chromium is not installed.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

import { ADMIN_TOKEN, MODEL, scriptedTraffic, startGantry } from './gantry.mjs';

const binary = process.argv[2];
const artifacts = process.argv[3] || 'test-artifacts';
const executablePath = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
if (!executablePath) {
  console.log('SKIP: chromium is not installed (apt-get install chromium)');
  process.exit(77);
}
mkdirSync(artifacts, { recursive: true });

const gantry = await startGantry(binary);
const origin = new URL(gantry.url).origin;
const browser = await chromium.launch({ executablePath, args: ['--no-sandbox', '--disable-gpu'] });
const offHost = [];
const consoleErrors = [];
let step = 'start';
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1800 } });
  const page = await context.newPage();
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.origin !== origin && u.protocol !== 'data:') offHost.push(r.url());
  });
  page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
  const failed = [];
  page.on('response', (r) => {
    // The one expected refusal: the wrong token's call to the admin API.
    if (r.status() >= 400 && !(r.status() === 401 && r.url().endsWith('/admin/v1/dashboard'))) failed.push(`${r.status()} ${r.url()}`);
  });

  step = 'the admin API refuses without the token';
  for (const headers of [{}, { Authorization: 'Bearer wrong-token' }]) {
    const r = await fetch(gantry.url + '/admin/v1/dashboard', { headers });
    assert.equal(r.status, 401, `GET /admin/v1/dashboard with ${JSON.stringify(headers)}`);
  }

  step = 'the page carries a strict CSP';
  const resp = await page.goto(gantry.url + '/dashboard');
  const csp = resp.headers()['content-security-policy'] || '';
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /connect-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|https?:/);

  step = 'a wrong token gets the sign-in form back with a message';
  await page.locator('#token').fill('not-the-admin-token');
  await page.locator('#signin-form button[type=submit]').click();
  await page.locator('#signin-error').waitFor({ state: 'visible' });
  assert.match(await page.locator('#signin-error').innerText(), /admin token was refused \(HTTP 401\)/);
  assert.equal(await page.locator('#board').isVisible(), false);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('gantry.admin_token')), null);

  step = 'sign in';
  await page.locator('#token').fill(ADMIN_TOKEN);
  await page.locator('#signin-form button[type=submit]').click();
  await page.locator('#board').waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('gantry.admin_token')), ADMIN_TOKEN);
  assert.equal(await page.evaluate(() => document.cookie), '', 'no cookie holds the token');
  assert.ok(!page.url().includes(ADMIN_TOKEN), 'the token is never in the URL');
  const before = await page.locator('#t-status').innerText();
  const spendBefore = await page.locator('.tile', { hasText: 'spend today' }).locator('.v').innerText();

  step = 'numbers change after scripted traffic';
  const { statuses, keyId } = await scriptedTraffic(gantry.url);
  console.log('traffic:', JSON.stringify(statuses));
  assert.ok(statuses['200'] > 0 && statuses['503'] > 0, 'the traffic succeeded, then opened the breaker');
  await page.waitForFunction(() => /\b503\b/.test(document.getElementById('t-status').innerText), null, { timeout: 15000 });
  assert.notEqual(await page.locator('#t-status').innerText(), before);
  await page.waitForFunction(
    () => !/\$0\.0000/.test([...document.querySelectorAll('.tile')].find((t) => /spend today/.test(t.innerText)).innerText),
    null,
    { timeout: 20000 },
  );
  assert.notEqual(await page.locator('.tile', { hasText: 'spend today' }).locator('.v').innerText(), spendBefore);
  // The request-rate chart drew a line.
  assert.ok((await page.locator('#c-req polyline').count()) > 0, 'the requests chart has lines');

  step = 'an error group shows';
  await page.waitForFunction(() => document.querySelectorAll('#t-errors tr').length > 1 && !/none/.test(document.getElementById('t-errors').innerText), null, { timeout: 15000 });
  const errors = await page.locator('#t-errors').innerText();
  assert.match(errors, /breaker|circuit/i, errors);

  step = 'a budget bar with its marks shows';
  const bar = page.locator('#budgets .bar').first();
  await bar.waitFor({ state: 'visible' });
  assert.equal(await bar.locator('.mark').count(), 3, '50/80/100 % marks');
  await page.waitForFunction(() => Number(document.querySelector('#budgets .bar').dataset.ratio) > 0.3, null, { timeout: 20000 });
  assert.match(await page.locator('#budgets').innerText(), /project acme · day/);

  step = 'top keys show ids, never secrets';
  await page.waitForFunction((id) => document.getElementById('t-keys').innerText.includes(id), keyId, { timeout: 20000 });
  assert.doesNotMatch(await page.locator('main').innerText(), /gsk_[A-Za-z0-9]{12}_[A-Za-z0-9]/);

  step = 'models show with their state';
  await page.waitForFunction((m) => /\bup\b|degraded|down/.test(document.getElementById('t-models').innerText) && document.getElementById('t-models').innerText.includes(m), MODEL, { timeout: 15000 });

  step = 'dependencies show the store and the job queue';
  await page.waitForFunction(() => {
    const t = document.getElementById('t-deps').innerText;
    return /store\s+up/.test(t) && /jobs\s+up/.test(t);
  }, null, { timeout: 15000 });

  const shot = join(artifacts, 'dashboard.png');
  await page.screenshot({ path: shot, fullPage: true });
  console.log('screenshot:', shot);

  step = '/status shows each model';
  const sresp = await page.goto(gantry.url + '/status');
  assert.match(sresp.headers()['content-security-policy'] || '', /default-src 'none'/);
  const row = page.locator(`#models tr[data-model="${MODEL}"]`);
  await row.waitFor();
  assert.match(await row.getAttribute('data-state'), /^(up|degraded|down)$/);
  assert.match(await row.innerText(), /%/);
  const json = await (await fetch(gantry.url + '/status.json')).json();
  assert.deepEqual(json.models.map((m) => m.name), [MODEL]);
  assert.ok(!JSON.stringify(json).includes('acme') && !JSON.stringify(json).includes(keyId), '/status.json shows nothing about projects or keys');
  await page.screenshot({ path: join(artifacts, 'status.png'), fullPage: true });

  step = 'sign out forgets the token';
  await page.goto(gantry.url + '/dashboard');
  await page.locator('#board').waitFor({ state: 'visible' });
  await page.locator('#signout').click();
  await page.locator('#signin').waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('gantry.admin_token')), null);

  step = 'nothing off-host, no CSP violation';
  assert.deepEqual(offHost, [], 'requests off-host');
  assert.deepEqual(failed, [], 'failed responses');
  assert.deepEqual(consoleErrors.filter((e) => !/status of 401/.test(e)), [], 'console errors (CSP violations show here)');
  console.log('dashboard: passed');
} catch (e) {
  console.error(`dashboard: FAIL at "${step}": ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  await gantry.stop();
}
