// The official `@anthropic-ai/sdk` client (messages.create, messages.stream, messages.countTokens)
// against a running `gantry serve`, unchanged. run_e2e.sh starts the server and sets
// GANTRY_BASE_URL.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import Anthropic from '@anthropic-ai/sdk';

import { assertValid } from './lib/json_check.mjs';

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
  timeout: Number(process.env.GANTRY_E2E_TIMEOUT_MS ?? 30_000),
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

// A forced tool call (tool_choice any / a named tool): the input is constrained to input_schema.
// Strings are bounded: the grammar guarantees valid input, not short input.
const WEATHER = {
  name: 'get_weather',
  description: 'The weather in a city',
  input_schema: {
    type: 'object',
    properties: {
      city: { type: 'string', maxLength: 12 },
      unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
      days: { type: 'integer', minimum: 1, maximum: 7 },
    },
    required: ['city', 'unit'],
    additionalProperties: false,
  },
};
const LOOKUP = {
  name: 'lookup',
  description: 'Looks a word up',
  input_schema: {
    type: 'object',
    properties: { word: { type: 'string', pattern: '^[a-z]{1,8}$' }, exact: { type: 'boolean' } },
    required: ['word', 'exact'],
    additionalProperties: false,
  },
};
const SCHEMA_OF = { get_weather: WEATHER.input_schema, lookup: LOOKUP.input_schema };
const toolParams = {
  model: MODEL,
  max_tokens: 300,
  messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
  tools: [WEATHER, LOOKUP],
  tool_choice: { type: 'any', disable_parallel_tool_use: true },
};

function assertToolUse(block, names) {
  assert.equal(block.type, 'tool_use');
  // Opaque to clients (Gantry's ids read call_..., Anthropic's toolu_...).
  assert.ok(typeof block.id === 'string' && block.id.length > 0);
  assert.ok(names.includes(block.name), block.name);
  assert.equal(typeof block.input, 'object');
  assertValid(SCHEMA_OF[block.name], JSON.stringify(block.input), `${block.name} input`);
}

test('messages.create with tool_choice any: a tool_use block whose input validates, stop_reason tool_use', async () => {
  for (const s of [{ temperature: 0 }, { temperature: 1 }, { temperature: 1, top_k: 40 }]) {
    const m = await client.messages.create({ ...toolParams, ...s });
    assert.equal(m.stop_reason, 'tool_use', JSON.stringify(m.content));
    const uses = m.content.filter((b) => b.type === 'tool_use');
    assert.equal(uses.length, 1, 'disable_parallel_tool_use: exactly one call');
    assertToolUse(uses[0], ['get_weather', 'lookup']);
  }
  // A named tool.
  const named = await client.messages.create({ ...toolParams, tool_choice: { type: 'tool', name: 'lookup', disable_parallel_tool_use: true }, temperature: 0 });
  assert.equal(named.stop_reason, 'tool_use');
  assertToolUse(named.content.find((b) => b.type === 'tool_use'), ['lookup']);
});

test('messages.stream with a forced tool: input_json_delta events add up to finalMessage\'s input', async () => {
  const params = { ...toolParams, temperature: 0 };
  const plain = await client.messages.create(params);
  const stream = client.messages.stream(params);
  let json = '';
  const types = [];
  stream.on('streamEvent', (e) => {
    types.push(e.type);
    if (e.type === 'content_block_delta' && e.delta.type === 'input_json_delta') json += e.delta.partial_json;
  });
  const final = await stream.finalMessage();
  assert.equal(types[0], 'message_start');
  assert.equal(types.at(-1), 'message_stop');
  assert.ok(types.includes('content_block_start'));
  assert.equal(final.stop_reason, 'tool_use');
  const use = final.content.find((b) => b.type === 'tool_use');
  assertToolUse(use, ['get_weather', 'lookup']);
  assert.ok(json.length > 0, 'no input_json_delta');
  assert.deepEqual(JSON.parse(json), use.input);
  // Greedy: the same call as create's.
  const plainUse = plain.content.find((b) => b.type === 'tool_use');
  assert.equal(use.name, plainUse.name);
  assert.deepEqual(use.input, plainUse.input);
});

test('a tool_use / tool_result history is accepted', async () => {
  const first = await client.messages.create({ ...toolParams, temperature: 0 });
  const use = first.content.find((b) => b.type === 'tool_use');
  const m = await client.messages.create({
    model: MODEL,
    max_tokens: 8,
    temperature: 0,
    tools: [WEATHER, LOOKUP],
    messages: [
      ...toolParams.messages,
      { role: 'assistant', content: first.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '18 degrees' }] },
    ],
  });
  assert.ok(['end_turn', 'max_tokens', 'tool_use'].includes(m.stop_reason));
});

test('a malformed or unsupported input_schema is a 400 naming the field', async () => {
  const cases = [
    [{ tools: [{ name: 'f', input_schema: { type: 'object', properties: 'x' } }] }, /^tools\.0\.input_schema: /],
    [{ tools: [{ name: 'f', input_schema: { type: 'object', properties: { a: { type: 'integer', multipleOf: 2 } } } }], tool_choice: { type: 'any' } }, /^tools\.0\.input_schema: .*multipleOf/],
  ];
  for (const [extra, message] of cases) {
    await assert.rejects(
      client.messages.create({ ...params, ...extra }),
      (e) => {
        assert.equal(e.status, 400);
        assert.equal(e.error?.error?.type, 'invalid_request_error');
        assert.match(e.error?.error?.message, message);
        return true;
      },
    );
  }
});
