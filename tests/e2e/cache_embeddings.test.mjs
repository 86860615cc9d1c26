// The official `openai` npm client against a running `gantry serve`: response-cache hits as the
// client sees them (a replayed stream parses to the same text) and the embeddings endpoint in
// both encodings (the SDK asks for base64 by default and decodes it itself).
//
//   GANTRY_BASE_URL=http://127.0.0.1:8080 node --test tests/e2e/cache_embeddings.test.mjs
import assert from 'node:assert/strict';
import { test } from 'node:test';

import OpenAI from 'openai';

const baseURL = process.env.GANTRY_BASE_URL;
if (!baseURL) {
  throw new Error('GANTRY_BASE_URL is not set (expected e.g. http://127.0.0.1:8080)');
}
const MODEL = 'stories260K';

const client = new OpenAI({
  baseURL: `${baseURL}/v1`,
  apiKey: 'unused',
  maxRetries: 0,
  timeout: Number(process.env.GANTRY_E2E_TIMEOUT_MS ?? 30_000),
});

async function streamedChat(params) {
  const { data: stream, response } = await client.chat.completions
    .create({ ...params, stream: true, stream_options: { include_usage: true } })
    .withResponse();
  let text = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  const ids = new Set();
  for await (const chunk of stream) {
    chunks += 1;
    ids.add(chunk.id);
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.delta.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return { text, finish, usage, chunks, ids, cache: response.headers.get('x-gantry-cache') };
}

test('a streamed cache hit parses to the same text as the live stream', async () => {
  // A prompt no other test sends, so the first request is a miss whatever ran before.
  const params = {
    model: MODEL,
    messages: [{ role: 'user', content: `Tim had a red kite ${Date.now()}` }],
    max_tokens: 24,
    temperature: 0,
  };
  const live = await streamedChat(params);
  const replay = await streamedChat(params);
  assert.equal(live.cache, 'miss');
  assert.equal(replay.cache, 'hit');
  assert.ok(live.text.length > 0);
  assert.equal(replay.text, live.text);
  assert.equal(replay.finish, live.finish);
  assert.equal(replay.chunks, live.chunks, 'chunked like the live stream');
  assert.equal(replay.ids.size, 1);
  assert.notDeepEqual([...replay.ids], [...live.ids], 'a hit has its own id');
  assert.equal(replay.usage.completion_tokens, live.usage.completion_tokens);
  assert.equal(replay.usage.prompt_tokens_details.cached_tokens, replay.usage.prompt_tokens);

  // The non-streamed form of the same request is served from the same entry.
  const { data: whole, response } = await client.chat.completions.create(params).withResponse();
  assert.equal(response.headers.get('x-gantry-cache'), 'hit');
  assert.equal(whole.choices[0].message.content, live.text);
});

test('sampled requests without a seed bypass the cache', async () => {
  const params = {
    model: MODEL,
    messages: [{ role: 'user', content: 'Once upon a time' }],
    max_tokens: 8,
    temperature: 0.7,
  };
  for (let i = 0; i < 2; i += 1) {
    const { response } = await client.chat.completions.create(params).withResponse();
    assert.equal(response.headers.get('x-gantry-cache'), 'bypass');
  }
});

function norm(v) {
  return Math.sqrt(v.reduce((s, x) => s + x * x, 0));
}

test('embeddings: float and base64 (SDK default) give the same unit vectors', async () => {
  const input = ['Once upon a time', 'The little dog barked.'];
  const floats = await client.embeddings.create({ model: MODEL, input, encoding_format: 'float' });
  assert.equal(floats.object, 'list');
  assert.equal(floats.model, MODEL);
  assert.equal(floats.data.length, 2);
  assert.ok(floats.usage.prompt_tokens > 0);
  assert.equal(floats.usage.total_tokens, floats.usage.prompt_tokens);
  for (const [i, d] of floats.data.entries()) {
    assert.equal(d.object, 'embedding');
    assert.equal(d.index, i);
    assert.equal(d.embedding.length, 64);
    assert.ok(Math.abs(norm(d.embedding) - 1) < 1e-5, `norm ${norm(d.embedding)}`);
  }

  const decoded = await client.embeddings.create({ model: MODEL, input });
  assert.equal(decoded.data.length, 2);
  for (let i = 0; i < 2; i += 1) {
    assert.deepEqual(Array.from(decoded.data[i].embedding), floats.data[i].embedding);
  }
});

test('embeddings: dimensions is a 400 BadRequestError', async () => {
  await assert.rejects(
    client.embeddings.create({ model: MODEL, input: 'x', dimensions: 8 }),
    (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `got ${err}`);
      assert.equal(err.status, 400);
      assert.equal(err.param, 'dimensions');
      return true;
    },
  );
});
