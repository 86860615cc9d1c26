// The official `openai` npm client against a running `gantry serve`. The server's base URL
// (http://127.0.0.1:PORT) comes from GANTRY_BASE_URL; run_e2e.sh starts the server and sets it.
//
//   GANTRY_BASE_URL=http://127.0.0.1:8080 node --test tests/e2e/openai_sdk.test.mjs
import assert from 'node:assert/strict';
import { test } from 'node:test';

import OpenAI from 'openai';

const baseURL = process.env.GANTRY_BASE_URL;
if (!baseURL) {
  throw new Error('GANTRY_BASE_URL is not set (expected e.g. http://127.0.0.1:8080)');
}
const MODEL = 'stories260K'; // the bundled model, which run_e2e.sh serves
const PROMPT = 'Once upon a time';

const client = new OpenAI({
  baseURL: `${baseURL}/v1`,
  apiKey: 'unused',
  maxRetries: 0, // an error case must surface, not be retried
  timeout: Number(process.env.GANTRY_E2E_TIMEOUT_MS ?? 30_000),
  // These tests compare live generations (streamed vs not, seeds); the response cache would
  // replay the first answer. cache_embeddings.test.mjs covers the cache.
  defaultHeaders: { 'Cache-Control': 'no-store' },
});

async function collectChat(stream) {
  let text = '';
  let finish = null;
  let usage = null;
  let role = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta.role) role = c.delta.role;
      text += c.delta.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return { text, finish, usage, role };
}

async function collectCompletion(stream) {
  let text = '';
  let finish = null;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      text += c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return { text, finish };
}

test('lists and retrieves models', async () => {
  const page = await client.models.list();
  const ids = page.data.map((m) => m.id);
  assert.ok(ids.includes(MODEL), `expected ${MODEL} in ${ids}`);
  const model = await client.models.retrieve(MODEL);
  assert.equal(model.id, MODEL);
  assert.equal(model.object, 'model');
});

test('chat completion without streaming', async () => {
  const r = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: PROMPT }],
    max_tokens: 16,
    temperature: 0,
  });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.ok(r.choices[0].message.content.length > 0);
  assert.ok(['length', 'stop'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 0);
  assert.ok(r.usage.completion_tokens > 0 && r.usage.completion_tokens <= 16);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test('chat completion streamed equals non-streamed (greedy), with usage', async () => {
  const params = {
    model: MODEL,
    messages: [{ role: 'user', content: PROMPT }],
    max_tokens: 32,
    temperature: 0,
  };
  const full = await client.chat.completions.create(params);
  const s = await collectChat(
    await client.chat.completions.create({
      ...params,
      stream: true,
      stream_options: { include_usage: true },
    }),
  );
  assert.equal(s.role, 'assistant');
  assert.equal(s.text, full.choices[0].message.content);
  assert.equal(s.finish, full.choices[0].finish_reason);
  assert.ok(s.usage, 'no usage chunk');
  assert.equal(s.usage.completion_tokens, full.usage.completion_tokens);
  assert.equal(s.usage.prompt_tokens, full.usage.prompt_tokens);
});

test('streamed text equals non-streamed text for the same seed', async () => {
  for (const seed of [7, 1234]) {
    const params = {
      model: MODEL,
      messages: [{ role: 'user', content: PROMPT }],
      max_tokens: 32,
      temperature: 1,
      seed,
    };
    const full = await client.chat.completions.create(params);
    const s = await collectChat(await client.chat.completions.create({ ...params, stream: true }));
    assert.equal(s.text, full.choices[0].message.content, `seed ${seed}`);
  }
});

test('completions, with and without streaming', async () => {
  const params = { model: MODEL, prompt: PROMPT, max_tokens: 24, temperature: 0 };
  const full = await client.completions.create(params);
  assert.equal(full.object, 'text_completion');
  assert.match(full.id, /^cmpl-/);
  assert.ok(full.choices[0].text.length > 0);
  const s = await collectCompletion(await client.completions.create({ ...params, stream: true }));
  assert.equal(s.text, full.choices[0].text);
  assert.equal(s.finish, full.choices[0].finish_reason);

  // The bundled model's chat format is plain: the same prompt as one user message generates
  // the same text.
  const chat = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: PROMPT }],
    max_tokens: 24,
    temperature: 0,
  });
  assert.equal(chat.choices[0].message.content, full.choices[0].text);
});

test('n choices', async () => {
  const r = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: PROMPT }],
    max_tokens: 8,
    n: 3,
    seed: 3,
  });
  assert.deepEqual(
    r.choices.map((c) => c.index),
    [0, 1, 2],
  );
});

test('unknown model is a 404 NotFoundError', async () => {
  await assert.rejects(
    client.chat.completions.create({
      model: 'no-such-model',
      messages: [{ role: 'user', content: 'hi' }],
    }),
    (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 404);
      assert.equal(err.param, 'model');
      assert.equal(err.type, 'invalid_request_error');
      assert.ok(err.headers.get('x-request-id'), 'no x-request-id on the error');
      return true;
    },
  );
});

test('bad parameters are 400 BadRequestErrors naming the parameter', async () => {
  const cases = [
    [{ temperature: 5 }, 'temperature'],
    [{ n: 99 }, 'n'],
    [{ frobnicate: true }, 'frobnicate'],
    [{ max_tokens: 1_000_000_000 }, 'max_tokens'],
  ];
  for (const [extra, param] of cases) {
    await assert.rejects(
      client.chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: 'hi' }],
        ...extra,
      }),
      (err) => {
        assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}: ${err}`);
        assert.equal(err.status, 400);
        assert.equal(err.param, param);
        assert.equal(err.type, 'invalid_request_error');
        return true;
      },
    );
  }
  // The error surfaces the same way when streaming was requested.
  await assert.rejects(
    client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'hi' }],
      temperature: -1,
      stream: true,
    }),
    (err) => err instanceof OpenAI.BadRequestError && err.param === 'temperature',
  );
});
