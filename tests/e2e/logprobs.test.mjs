// logprobs with the official `openai` npm client against a running `gantry serve`: chat
// logprobs / top_logprobs (streamed and not) and completions logprobs. Gantry reports the raw
// model distribution (log-softmax of the logits before penalties, bias and grammar masks).
// run_e2e.sh starts the server and sets GANTRY_BASE_URL.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import OpenAI from 'openai';

const baseURL = process.env.GANTRY_BASE_URL;
if (!baseURL) {
  throw new Error('GANTRY_BASE_URL is not set (expected e.g. http://127.0.0.1:8080)');
}
const MODEL = 'stories260K';
const PROMPT = 'Once upon a time';

const client = new OpenAI({
  baseURL: `${baseURL}/v1`,
  apiKey: 'unused',
  maxRetries: 0,
  timeout: Number(process.env.GANTRY_E2E_TIMEOUT_MS ?? 30_000),
  defaultHeaders: { 'Cache-Control': 'no-store' },
});

const EPS = 1e-6;

// One chat logprobs entry: its shape, bytes that spell the token, top_logprobs sorted descending,
// probabilities that sum to at most 1, and the chosen token consistent with its alternatives.
function checkEntry(e, topN, greedy, what) {
  assert.equal(typeof e.token, 'string', what);
  assert.ok(Number.isFinite(e.logprob) && e.logprob <= 0, `${what}: logprob ${e.logprob}`);
  assert.ok(Array.isArray(e.bytes) && e.bytes.every((b) => Number.isInteger(b) && b >= 0 && b < 256), what);
  assert.equal(e.top_logprobs.length, topN, what);
  let mass = 0;
  for (let k = 0; k < e.top_logprobs.length; k++) {
    const t = e.top_logprobs[k];
    assert.equal(typeof t.token, 'string');
    assert.ok(Number.isFinite(t.logprob) && t.logprob <= 0, `${what}: top logprob ${t.logprob}`);
    assert.ok(Array.isArray(t.bytes));
    if (k > 0) assert.ok(t.logprob <= e.top_logprobs[k - 1].logprob, `${what}: top_logprobs not sorted`);
    mass += Math.exp(t.logprob);
  }
  assert.ok(mass <= 1 + 1e-4, `${what}: top probabilities sum to ${mass}`);
  if (topN > 0) {
    // The chosen token is never more likely than the most likely one; when it is among the top,
    // its logprob is the same number.
    assert.ok(e.logprob <= e.top_logprobs[0].logprob + EPS, what);
    const same = e.top_logprobs.find((t) => Buffer.from(t.bytes).equals(Buffer.from(e.bytes)));
    if (same) assert.ok(Math.abs(same.logprob - e.logprob) < EPS, what);
    if (greedy) {
      assert.deepEqual(e.top_logprobs[0].bytes, e.bytes, `${what}: greedy picks the top token`);
      assert.equal(e.top_logprobs[0].logprob, e.logprob);
    }
  }
}

function checkContent(content, text, completionTokens, topN, greedy) {
  assert.equal(content.length, completionTokens, 'one entry per generated token');
  content.forEach((e, i) => checkEntry(e, topN, greedy, `token ${i}`));
  // The tokens' bytes spell the text.
  assert.equal(Buffer.concat(content.map((e) => Buffer.from(e.bytes))).toString('utf8'), text);
}

test('chat logprobs with top_logprobs 5, greedy and sampled', async () => {
  for (const s of [{ temperature: 0 }, { temperature: 1, seed: 3 }, { temperature: 1.5, seed: 4, top_p: 0.9 }]) {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: PROMPT }],
      max_tokens: 12,
      logprobs: true,
      top_logprobs: 5,
      ...s,
    });
    const c = r.choices[0];
    assert.ok(c.logprobs && Array.isArray(c.logprobs.content), JSON.stringify(c.logprobs));
    checkContent(c.logprobs.content, c.message.content, r.usage.completion_tokens, 5, s.temperature === 0);
  }
});

test('streamed chat logprobs equal the non-streamed ones', async () => {
  const params = {
    model: MODEL,
    messages: [{ role: 'user', content: PROMPT }],
    max_tokens: 12,
    temperature: 0,
    logprobs: true,
    top_logprobs: 5,
  };
  const full = await client.chat.completions.create(params);
  const streamed = [];
  let text = '';
  for await (const chunk of await client.chat.completions.create({ ...params, stream: true })) {
    for (const c of chunk.choices) {
      text += c.delta.content ?? '';
      streamed.push(...(c.logprobs?.content ?? []));
    }
  }
  assert.equal(text, full.choices[0].message.content);
  checkContent(streamed, text, full.usage.completion_tokens, 5, true);
  assert.deepEqual(streamed, full.choices[0].logprobs.content);

  // The client's stream helper gathers them too.
  const final = await client.chat.completions.stream(params).finalChatCompletion();
  assert.deepEqual(final.choices[0].logprobs.content, full.choices[0].logprobs.content);
});

test('logprobs without top_logprobs, top_logprobs 20, and none when not asked', async () => {
  const base = { model: MODEL, messages: [{ role: 'user', content: PROMPT }], max_tokens: 6, temperature: 0 };
  const plain = await client.chat.completions.create({ ...base, logprobs: true });
  checkContent(plain.choices[0].logprobs.content, plain.choices[0].message.content, plain.usage.completion_tokens, 0, true);
  const wide = await client.chat.completions.create({ ...base, logprobs: true, top_logprobs: 20 });
  checkContent(wide.choices[0].logprobs.content, wide.choices[0].message.content, wide.usage.completion_tokens, 20, true);
  // The same logprobs whatever top_logprobs is.
  assert.deepEqual(
    wide.choices[0].logprobs.content.map((e) => e.logprob),
    plain.choices[0].logprobs.content.map((e) => e.logprob),
  );
  const none = await client.chat.completions.create(base);
  assert.equal(none.choices[0].logprobs, null);
});

test('logprobs under a JSON schema constraint are still the raw distribution', async () => {
  const r = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: PROMPT }],
    max_tokens: 120,
    temperature: 0,
    logprobs: true,
    top_logprobs: 3,
    response_format: {
      type: 'json_schema',
      json_schema: { name: 'x', schema: { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'], additionalProperties: false } },
    },
  });
  const c = r.choices[0];
  assert.deepEqual(Object.keys(JSON.parse(c.message.content)), ['ok']);
  // The grammar forced tokens the model would not pick: each chosen token is a real token with a
  // logprob <= 0, not necessarily the top one.
  const { content } = c.logprobs;
  assert.equal(content.length, r.usage.completion_tokens);
  content.forEach((e, i) => checkEntry(e, 3, false, `token ${i}`));
  assert.equal(Buffer.concat(content.map((e) => Buffer.from(e.bytes))).toString('utf8'), c.message.content);
  assert.ok(content.some((e) => e.logprob < e.top_logprobs[0].logprob), 'the grammar overrode the model somewhere');
});

function checkCompletionLogprobs(lp, text, n, greedy, offset0 = 0) {
  assert.equal(lp.tokens.length, lp.token_logprobs.length);
  assert.equal(lp.tokens.length, lp.top_logprobs.length);
  assert.equal(lp.tokens.length, lp.text_offset.length);
  assert.equal(lp.tokens.join(''), text);
  let at = offset0;
  lp.tokens.forEach((t, i) => {
    assert.equal(lp.text_offset[i], at, `text_offset ${i}`);
    at += t.length;
    const lpv = lp.token_logprobs[i];
    assert.ok(Number.isFinite(lpv) && lpv <= 0);
    const top = Object.entries(lp.top_logprobs[i]);
    assert.ok(top.length >= Math.min(n, 1) && top.length <= n + 1, `top ${i}: ${top.length}`);
    const best = Math.max(...top.map(([, v]) => v));
    assert.ok(lpv <= best + EPS);
    if (greedy) assert.equal(lp.top_logprobs[i][t], lpv, `greedy token ${i} is in its top`);
    for (const [, v] of top) assert.ok(v <= 0);
  });
}

test('completions logprobs 3, streamed and not', async () => {
  for (const s of [{ temperature: 0 }, { temperature: 1, seed: 9 }]) {
    const params = { model: MODEL, prompt: PROMPT, max_tokens: 10, logprobs: 3, ...s };
    const r = await client.completions.create(params);
    const c = r.choices[0];
    checkCompletionLogprobs(c.logprobs, c.text, 3, s.temperature === 0);
    assert.equal(c.logprobs.tokens.length, r.usage.completion_tokens);

    const lp = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
    let text = '';
    for await (const chunk of await client.completions.create({ ...params, stream: true })) {
      for (const ch of chunk.choices) {
        text += ch.text;
        if (ch.logprobs) for (const k of Object.keys(lp)) lp[k].push(...ch.logprobs[k]);
      }
    }
    assert.equal(text, c.text);
    assert.deepEqual(lp, c.logprobs);
  }
});

test('bad logprobs parameters are 400s naming the field', async () => {
  const chat = { model: MODEL, messages: [{ role: 'user', content: PROMPT }], max_tokens: 2 };
  const cases = [
    [client.chat.completions, { ...chat, logprobs: true, top_logprobs: 21 }, 'top_logprobs'],
    [client.chat.completions, { ...chat, logprobs: true, top_logprobs: -1 }, 'top_logprobs'],
    [client.chat.completions, { ...chat, top_logprobs: 3 }, 'top_logprobs'],
    [client.chat.completions, { ...chat, logprobs: 'yes' }, 'logprobs'],
    [client.completions, { model: MODEL, prompt: PROMPT, max_tokens: 2, logprobs: 21 }, 'logprobs'],
  ];
  for (const [api, body, param] of cases) {
    await assert.rejects(
      api.create(body),
      (e) => {
        assert.ok(e instanceof OpenAI.BadRequestError, `got ${e?.constructor?.name}: ${e}`);
        assert.equal(e.param, param);
        return true;
      },
      JSON.stringify(body),
    );
  }
});
