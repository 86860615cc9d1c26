// The official `@anthropic-ai/sdk` client (messages.create, messages.stream, messages.countTokens)
// against a running `gantry serve`, unchanged. run_e2e.sh starts the server and sets
// GANTRY_BASE_URL.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import Anthropic from '@anthropic-ai/sdk';

const baseURL = process.env.GANTRY_BASE_URL;
if (!baseURL) {
  throw new Error('GANTRY_BASE_URL is not set (expected e.g. http://127.0.0.1:8080)');
}
const MODEL = 'stories260K';
const PROMPT = 'Once upon a time';

const client = new Anthropic({
  baseURL,
  apiKey: 'unused', // sent as x-api-key; the e2e server has no keys
  maxRetries: 0,
  timeout: 30_000,
  defaultHeaders: { 'Cache-Control': 'no-store' },
});

const params = {
  model: MODEL,
  max_tokens: 12,
  temperature: 0,
  system: 'Tell a story.',
  messages: [{ role: 'user', content: PROMPT }],
};

test('messages.create returns an Anthropic message', async () => {
  const m = await client.messages.create(params);
  assert.equal(m.type, 'message');
  assert.equal(m.role, 'assistant');
  assert.match(m.id, /^msg_/);
  assert.equal(m.model, MODEL);
  assert.equal(m.content[0].type, 'text');
  assert.ok(m.content[0].text.length > 0);
  assert.ok(['end_turn', 'max_tokens'].includes(m.stop_reason));
  assert.ok(m.usage.output_tokens > 0 && m.usage.output_tokens <= 12);
  assert.ok(m.usage.input_tokens + (m.usage.cache_read_input_tokens ?? 0) > 0);
});

test('messages.stream: text events add up to finalMessage, which matches create', async () => {
  const plain = await client.messages.create(params);
  const stream = client.messages.stream(params);
  let text = '';
  stream.on('text', (delta) => {
    text += delta;
  });
  const final = await stream.finalMessage();
  assert.equal(text, plain.content[0].text);
  assert.equal(final.content[0].text, plain.content[0].text);
  assert.equal(final.stop_reason, plain.stop_reason);
  assert.equal(final.usage.output_tokens, plain.usage.output_tokens);
});

test('messages.create accepts a tool definition and returns well-formed content', async () => {
  const m = await client.messages.create({
    ...params,
    tools: [
      {
        name: 'get_weather',
        description: 'The weather in a city',
        input_schema: { type: 'object', properties: { city: { type: 'string' } } },
      },
    ],
  });
  for (const block of m.content) {
    assert.ok(['text', 'tool_use'].includes(block.type));
    if (block.type === 'tool_use') assert.equal(typeof block.input, 'object');
  }
});

test('messages.countTokens counts the prompt create would use', async () => {
  const { input_tokens } = await client.messages.countTokens({
    model: MODEL,
    system: params.system,
    messages: params.messages,
  });
  const m = await client.messages.create(params);
  assert.equal(input_tokens, m.usage.input_tokens + (m.usage.cache_read_input_tokens ?? 0));
});

test('a bad request is a BadRequestError in Anthropic shape', async () => {
  await assert.rejects(
    client.messages.create({
      ...params,
      messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'AA==' } }] }],
    }),
    (e) => {
      assert.equal(e.status, 400);
      assert.equal(e.error?.type, 'error');
      assert.equal(e.error?.error?.type, 'invalid_request_error');
      assert.match(e.error?.error?.message, /^messages\.0\.content\.0\.type/);
      return true;
    },
  );
});
