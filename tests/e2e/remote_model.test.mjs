// The official `openai` npm client against a REMOTE model (issue 12): run_e2e.sh starts a second
// `gantry serve` with `--model remote=<the first one>/v1`, so every call here crosses a Gantry
// gateway into another Gantry's engine. The client must not notice: chat, streamed chat with
// usage, embeddings, errors — compared with the same calls made to the upstream directly.
//
//   GANTRY_BASE_URL=... GANTRY_REMOTE_BASE_URL=... node --test tests/e2e/remote_model.test.mjs
import assert from 'node:assert/strict';
import { test } from 'node:test';

import OpenAI from 'openai';

const upstreamURL = process.env.GANTRY_BASE_URL;
const gatewayURL = process.env.GANTRY_REMOTE_BASE_URL;
if (!upstreamURL || !gatewayURL) {
  throw new Error('GANTRY_BASE_URL and GANTRY_REMOTE_BASE_URL must be set (run_e2e.sh sets them)');
}
const options = { apiKey: 'unused', maxRetries: 0, timeout: Number(process.env.GANTRY_E2E_TIMEOUT_MS ?? 30_000), defaultHeaders: { 'Cache-Control': 'no-store' } };
const upstream = new OpenAI({ baseURL: `${upstreamURL}/v1`, ...options });
const gateway = new OpenAI({ baseURL: `${gatewayURL}/v1`, ...options });
const messages = [{ role: 'user', content: 'Once upon a time' }];

test('remote: the model is listed by the gateway', async () => {
  const ids = (await gateway.models.list()).data.map((m) => m.id);
  assert.deepEqual(ids, ['remote']);
});

test('remote: chat answers what the upstream answers, with its usage', async () => {
  const want = await upstream.chat.completions.create({ model: 'stories260K', messages, max_tokens: 12, temperature: 0 });
  const got = await gateway.chat.completions.create({ model: 'remote', messages, max_tokens: 12, temperature: 0 });
  assert.equal(got.model, 'remote');
  assert.equal(got.choices[0].message.content, want.choices[0].message.content);
  assert.equal(got.choices[0].finish_reason, want.choices[0].finish_reason);
  assert.equal(got.usage.completion_tokens, want.usage.completion_tokens);
  assert.equal(got.usage.prompt_tokens, want.usage.prompt_tokens);
});

test('remote: a streamed chat parses to the same text, with usage when asked', async () => {
  const want = await upstream.chat.completions.create({ model: 'stories260K', messages, max_tokens: 12, temperature: 0 });
  const stream = await gateway.chat.completions.create({
    model: 'remote', messages, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    assert.equal(chunk.model, 'remote');
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.delta.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(text, want.choices[0].message.content);
  assert.equal(finish, want.choices[0].finish_reason);
  assert.ok(usage, 'the usage chunk arrives');
  assert.equal(usage.completion_tokens, want.usage.completion_tokens);
});

test('remote: embeddings are forwarded, float and base64 alike', async () => {
  const input = ['hello', 'world'];
  const want = await upstream.embeddings.create({ model: 'stories260K', input, encoding_format: 'float' });
  const floats = await gateway.embeddings.create({ model: 'remote', input, encoding_format: 'float' });
  const b64 = await gateway.embeddings.create({ model: 'remote', input }); // the SDK's default
  assert.equal(floats.data.length, 2);
  for (let i = 0; i < 2; i++) {
    const a = want.data[i].embedding;
    for (const got of [floats.data[i].embedding, b64.data[i].embedding]) {
      assert.equal(got.length, a.length);
      for (let j = 0; j < a.length; j++) assert.ok(Math.abs(got[j] - a[j]) < 1e-6, `dim ${j}`);
    }
  }
});

test('remote: an upstream error reaches the client in OpenAI shape', async () => {
  await assert.rejects(
    gateway.chat.completions.create({ model: 'remote', messages, max_tokens: 100000 }),
    (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `${err}`);
      assert.equal(err.status, 400);
      return true;
    },
  );
});
