// The Gantry dashboard: signs in with the admin token (kept in this tab's sessionStorage, sent
// only as a bearer header), then polls /admin/v1/dashboard every 1.5 s and redraws. No library,
// no request off this host (the server's Content-Security-Policy forbids it anyway).
'use strict';

const TOKEN_KEY = 'gantry.admin_token';
const POLL_MS = 1500;
const SVG = 'http://www.w3.org/2000/svg';
let timer = null;
let series = null; // the chart columns held here: polls fetch only points newer than the last
const HOUR_MS = 3600 * 1000;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmt(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  const d = digits === undefined ? 2 : digits;
  if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1) + 'M';
  if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + 'k';
  return Number(v).toFixed(d);
}
const pct = (v) => (v === null || v === undefined ? '–' : (v * 100).toFixed(1) + '%');
const usd = (v) => '$' + Number(v || 0).toFixed(4);
const secs = (v) => (v === null || v === undefined ? '–' : v < 1 ? (v * 1000).toFixed(0) + ' ms' : v.toFixed(2) + ' s');
const last = (a) => (a && a.length ? a[a.length - 1] : null);

// Appends the new points to the held columns and drops those older than an hour.
function merge(d) {
  if (!series) {
    series = d.points;
  } else {
    for (const k of Object.keys(series)) series[k].push(...(d.points[k] || []));
  }
  const cut = d.now_ms - HOUR_MS;
  let drop = 0;
  while (drop < series.t.length && series.t[drop] < cut) drop++;
  if (drop) for (const k of Object.keys(series)) series[k].splice(0, drop);
  d.points = series;
}

function showSignin(message) {
  if (timer) clearTimeout(timer);
  timer = null;
  series = null;
  $('board').hidden = true;
  $('signout').hidden = true;
  $('signin').hidden = false;
  const err = $('signin-error');
  err.hidden = !message;
  err.textContent = message || '';
  $('token').focus();
}

function showBoard() {
  $('signin').hidden = true;
  $('board').hidden = false;
  $('signout').hidden = false;
}

async function poll() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return showSignin('');
  let resp;
  try {
    const since = series && series.t.length ? '?since=' + series.t[series.t.length - 1] : '';
    resp = await fetch('/admin/v1/dashboard' + since, {
      headers: { Authorization: 'Bearer ' + token },
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (e) {
    $('updated').textContent = 'server unreachable — retrying';
    timer = setTimeout(poll, POLL_MS * 2);
    return;
  }
  if (resp.status === 401 || resp.status === 403) {
    sessionStorage.removeItem(TOKEN_KEY);
    let detail = '';
    try {
      detail = (await resp.json()).error.message;
    } catch (e) { /* not JSON: keep the status alone */ }
    return showSignin('The admin token was refused (HTTP ' + resp.status + '). ' + detail);
  }
  if (!resp.ok) {
    $('updated').textContent = 'HTTP ' + resp.status + ' — retrying';
    timer = setTimeout(poll, POLL_MS * 2);
    return;
  }
  const data = await resp.json();
  merge(data);
  showBoard();
  render(data);
  timer = setTimeout(poll, POLL_MS);
}

// A line chart of the last hour: series share one y scale starting at 0; nulls are gaps.
function chart(id, t, series, opts) {
  const box = $(id);
  const W = 600, H = 150, L = 44, R = 6, T = 6, B = 18;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  let max = opts && opts.max ? opts.max : 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
  if (max <= 0) max = 1;
  const t0 = t.length ? t[0] : 0, t1 = t.length ? t[t.length - 1] : 1;
  const span = Math.max(t1 - t0, 1);
  const x = (ti) => L + ((ti - t0) / span) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  for (const f of [0, 0.5, 1]) {
    const g = document.createElementNS(SVG, 'line');
    g.setAttribute('class', 'grid');
    g.setAttribute('x1', L); g.setAttribute('x2', W - R);
    g.setAttribute('y1', y(max * f)); g.setAttribute('y2', y(max * f));
    svg.appendChild(g);
    const lab = document.createElementNS(SVG, 'text');
    lab.setAttribute('x', 2); lab.setAttribute('y', y(max * f) + 3);
    lab.textContent = opts && opts.pct ? (max * f * 100).toFixed(0) + '%' : fmt(max * f, max < 1 ? 3 : 1);
    svg.appendChild(lab);
  }
  const ago = document.createElementNS(SVG, 'text');
  ago.setAttribute('x', L); ago.setAttribute('y', H - 4);
  ago.textContent = !t.length ? 'no samples yet' : span < 120000 ? Math.round(span / 1000) + ' s ago' : Math.round(span / 60000) + ' min ago';
  svg.appendChild(ago);
  series.forEach((s, i) => {
    let pts = [];
    const flush = () => {
      if (pts.length) {
        const pl = document.createElementNS(SVG, 'polyline');
        pl.setAttribute('class', 's' + i);
        pl.setAttribute('points', pts.length === 1 ? pts[0] + ' ' + pts[0] : pts.join(' '));
        svg.appendChild(pl);
      }
      pts = [];
    };
    s.values.forEach((v, j) => {
      if (v === null) flush();
      else pts.push(x(t[j]).toFixed(1) + ',' + y(v).toFixed(1));
    });
    flush();
  });
  const legend = el('div', { class: 'legend' });
  series.forEach((s, i) => legend.appendChild(el('span', { class: 'l' + i }, '■ ' + s.name + ' ' + (opts && opts.pct ? pct(last(s.values)) : fmt(last(s.values), 3)))));
  box.replaceChildren(svg, legend);
}

function table(id, head, rows) {
  const t = $(id);
  const thead = el('tr');
  head.forEach((h) => thead.appendChild(el('th', {}, h)));
  const body = [thead];
  for (const r of rows) {
    const tr = el('tr');
    r.forEach((c) => {
      if (c instanceof Node) {
        const td = el('td');
        td.appendChild(c);
        tr.appendChild(td);
      } else {
        tr.appendChild(el('td', typeof c === 'number' ? { class: 'num' } : {}, String(c)));
      }
    });
    body.push(tr);
  }
  if (!rows.length) {
    const tr = el('tr');
    tr.appendChild(el('td', { colspan: head.length, class: 'muted' }, 'none'));
    body.push(tr);
  }
  t.replaceChildren(...body);
}

function tile(k, v, cls) {
  const d = el('div', { class: 'tile' + (cls ? ' ' + cls : '') });
  d.appendChild(el('div', { class: 'v' }, v));
  d.appendChild(el('div', { class: 'k' }, k));
  return d;
}

function budgetBar(b) {
  const wrap = el('div', { class: 'budget' });
  const label = el('div', { class: 'label' });
  const what = b.owner_kind + ' ' + b.owner_id + ' · ' + b.period;
  const used = b.spend_limit_usd > 0
    ? usd(b.used_usd) + ' of ' + usd(b.spend_limit_usd)
    : b.used_tokens + ' of ' + b.token_quota + ' tokens';
  label.appendChild(el('span', {}, what));
  label.appendChild(el('span', {}, used + ' (' + pct(b.ratio) + ')'));
  const bar = el('div', { class: 'bar', 'data-ratio': String(b.ratio) });
  const fill = el('div', { class: 'fill' + (b.ratio >= 1 ? ' bad' : b.ratio >= 0.8 ? ' warn' : '') });
  fill.style.width = Math.min(Math.max(b.ratio, 0), 1) * 100 + '%'; // CSSOM: allowed by the CSP
  bar.appendChild(fill);
  for (const m of ['m50', 'm80', 'm100']) bar.appendChild(el('div', { class: 'mark ' + m }));
  const marks = el('div', { class: 'marks' });
  for (const m of ['0', '50', '80', '100']) marks.appendChild(el('span', { class: 't' + m }, m === '0' ? '0' : m + '%'));
  wrap.append(label, bar, marks);
  return wrap;
}

function render(d) {
  const p = d.points;
  const down = d.models.filter((m) => m.state === 'down').length;
  const degraded = d.models.filter((m) => m.state === 'degraded').length;
  const breakers = d.models.filter((m) => m.breaker_open).length;
  const exhausted = d.budgets.filter((b) => b.ratio >= 1).length;
  const s = $('summary');
  const parts = [down ? down + ' model(s) down' : degraded ? degraded + ' model(s) degraded' : 'all models up'];
  if (breakers) parts.push(breakers + ' spend breaker(s) open');
  if (exhausted) parts.push(exhausted + ' budget(s) exhausted');
  if (d.errors.length) parts.push(d.errors.length + ' error group(s)');
  s.textContent = parts.join(' · ');
  s.className = 'summary ' + (down || breakers || exhausted ? 'bad' : degraded || d.errors.length ? 'warn' : 'ok');
  $('updated').textContent = 'updated ' + new Date(d.now_ms).toLocaleTimeString();

  const r5 = last(p.req_5xx) || 0;
  const tiles = [
    tile('requests/s', fmt((last(p.req_2xx) || 0) + (last(p.req_4xx) || 0) + r5, 1)),
    tile('5xx/s', fmt(r5, 2), r5 > 0 ? 'bad' : ''),
    tile('TTFT p95', secs(last(p.ttft_p95))),
    tile('e2e p95', secs(last(p.e2e_p95))),
    tile('tokens/s out', fmt(last(p.tokens_out), 1)),
    tile('tokens/s in', fmt(last(p.tokens_in), 1)),
    tile('in flight', fmt(last(p.in_flight), 0)),
    tile('waiting', fmt(last(p.waiting), 0), (last(p.waiting) || 0) > 0 ? 'warn' : ''),
    tile('jobs queued', fmt(d.jobs.queued, 0)),
    tile('oldest job', secs(d.jobs.oldest_age_s)),
    tile('cache hits', pct(last(p.cache_hit_ratio))),
    tile('spend today', usd(d.spend.today_usd)),
    tile('spend this month', usd(d.spend.month_usd)),
    tile('error groups', String(d.errors.length), d.errors.length ? 'warn' : ''),
  ];
  $('tiles').replaceChildren(...tiles);

  chart('c-req', p.t, [{ name: '2xx', values: p.req_2xx }, { name: '4xx', values: p.req_4xx }, { name: '5xx', values: p.req_5xx }]);
  chart('c-ttft', p.t, [{ name: 'p50', values: p.ttft_p50 }, { name: 'p95', values: p.ttft_p95 }, { name: 'p99', values: p.ttft_p99 }]);
  chart('c-e2e', p.t, [{ name: 'p50', values: p.e2e_p50 }, { name: 'p95', values: p.e2e_p95 }, { name: 'p99', values: p.e2e_p99 }]);
  chart('c-tok', p.t, [{ name: 'in', values: p.tokens_in }, { name: 'out', values: p.tokens_out }]);
  chart('c-queue', p.t, [{ name: 'waiting', values: p.waiting }, { name: 'running', values: p.running }, { name: 'jobs queued', values: p.jobs_queued }]);
  chart('c-kv', p.t, [{ name: 'KV', values: p.kv_usage_max }, { name: 'response cache', values: p.cache_hit_ratio }, { name: 'prefix cache', values: p.prefix_hit_ratio }], { max: 1, pct: true });

  table('t-models', ['model', 'state', 'probe', 'running', 'waiting', 'KV', 'breaker'], d.models.map((m) => [
    m.name, el('span', { class: 'state-' + m.state }, m.state), secs(m.probe_ms / 1000), m.running, m.waiting, pct(m.kv_usage), m.breaker_open ? 'OPEN' : 'closed',
  ]));
  table('t-deps', ['dependency', 'state', 'latency', 'detail'], d.dependencies.map((x) => [
    x.name, el('span', { class: 'state-' + (x.ok ? 'up' : 'down') }, x.ok ? 'up' : 'down'), secs(x.latency_ms / 1000), x.error || '',
  ]));
  $('t-backends').hidden = d.backends.length === 0; // only remote models have pools
  table('t-backends', ['model', 'backend', 'state', 'in flight'], d.backends.map((x) => [
    x.model, x.backend, el('span', { class: 'state-' + (x.ready ? 'up' : 'down') }, x.ready ? 'ready' : (x.ejected ? 'ejected' : 'unhealthy')), x.in_flight,
  ]));
  const b = $('budgets');
  b.replaceChildren(...(d.budgets.length ? d.budgets.map(budgetBar) : [el('p', { class: 'muted' }, 'No budgets set (POST /admin/v1/budgets).')]));
  table('t-projects', ['project', 'today', 'this month'], d.spend.top_projects.map((x) => [x.id, usd(x.today_usd), usd(x.month_usd)]));
  table('t-keys', ['key id', 'today', 'this month'], d.spend.top_keys.map((x) => [x.id, usd(x.today_usd), usd(x.month_usd)]));
  table('t-errors', ['count', 'type', 'message', 'where', 'last seen'], d.errors.map((e) => [
    e.count, e.type, e.message, e.location, new Date(e.last_seen * 1000).toLocaleTimeString(),
  ]));
  table('t-jobs', ['', 'count'], [['queued now', d.jobs.queued], ...Object.entries(d.jobs.by_outcome).map(([k, v]) => [k, v])]);
  table('t-status', ['status', 'responses'], Object.entries(d.requests_by_status).map(([k, v]) => [k, v]));
}

document.addEventListener('DOMContentLoaded', () => {
  $('signin-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = $('token').value.trim();
    $('token').value = '';
    if (!v) return showSignin('Enter the admin token.');
    sessionStorage.setItem(TOKEN_KEY, v);
    poll();
  });
  $('signout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignin('Signed out.');
  });
  if (sessionStorage.getItem(TOKEN_KEY)) poll();
  else showSignin('');
});
