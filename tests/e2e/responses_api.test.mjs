// The official `openai` npm client's Responses API (responses.create, responses.stream) against a
// running `gantry serve`, unchanged. run_e2e.sh starts the server and sets GANTRY_BASE_URL.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import OpenAI from 'openai';

import { assertValid } from './lib/json_check.mjs';

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
  // Streamed and non-streamed answers are compared as live generations.
  defaultHeaders: { 'Cache-Control': 'no-store' },
});

test('responses.create returns a response whose output_text is the generation', async () => {
  const r = await client.responses.create({
    model: MODEL,
    input: PROMPT,
    instructions: 'Tell a story.',
    max_output_tokens: 16,
    temperature: 0,
    store: false,
  });
  assert.equal(r.object, 'response');
  assert.match(r.id, /^resp_/);
  assert.equal(r.model, MODEL);
  assert.ok(['completed', 'incomplete'].includes(r.status));
  assert.equal(r.output[0].type, 'message');
  assert.equal(r.output[0].role, 'assistant');
  assert.ok(r.output_text.length > 0, 'the SDK computes output_text from output');
  assert.equal(r.output_text, r.output[0].content[0].text);
  assert.ok(r.usage.input_tokens > 0);
  assert.ok(r.usage.output_tokens > 0 && r.usage.output_tokens <= 16);
  assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
  assert.equal(r.instructions, 'Tell a story.');
});

test('responses.create takes message items with content parts', async () => {
  const r = await client.responses.create({
    model: MODEL,
    input: [
      { role: 'developer', content: 'Tell a story.' },
      { type: 'message', role: 'user', content: [{ type: 'input_text', text: PROMPT }] },
    ],
    max_output_tokens: 8,
    temperature: 0,
  });
  assert.ok(r.output_text.length > 0);
});

test('responses.stream: text deltas add up to the final response, which matches create', async () => {
  const params = { model: MODEL, input: PROMPT, max_output_tokens: 12, temperature: 0 };
  const plain = await client.responses.create(params);
  const stream = client.responses.stream(params);
  let deltas = '';
  const types = [];
  stream.on('response.output_text.delta', (e) => {
    deltas += e.delta;
  });
  for await (const event of stream) types.push(event.type);
  const final = await stream.finalResponse();
  assert.equal(types[0], 'response.created');
  assert.ok(['response.completed', 'response.incomplete'].includes(types.at(-1)));
  assert.ok(types.includes('response.output_text.done'));
  assert.equal(deltas, plain.output_text);
  // The SDK's final response is its snapshot, built from the events (it sets no output_text on a
  // stream; response.completed replaces the snapshot, response.incomplete does not).
  assert.equal(final.output[0].type, 'message');
  assert.equal(final.output[0].content[0].text, plain.output_text);
});

test('a bad field is a BadRequestError naming it', async () => {
  await assert.rejects(
    client.responses.create({ model: MODEL, input: 'x', previous_response_id: 'resp_123' }),
    (e) => {
      assert.equal(e.status, 400);
      assert.equal(e.param, 'previous_response_id');
      return true;
    },
  );
});

// Structured outputs and tools through the Responses API. Strings are bounded: the grammar
// guarantees a valid document, not a short one, and the story model writes long strings.
const PLACE = {
  type: 'object',
  properties: {
    city: { type: 'string', maxLength: 12 },
    country: { type: 'string', enum: ['FR', 'DE', 'JP'] },
    population: { type: 'integer', minimum: 0, maximum: 40000000 },
    districts: { type: 'array', items: { type: 'string', pattern: '^[A-Z][a-z]{0,7}$' }, minItems: 1, maxItems: 3 },
  },
  required: ['city', 'country', 'population', 'districts'],
  additionalProperties: false,
};
const WEATHER_TOOL = {
  type: 'function',
  name: 'get_weather',
  description: 'The weather in a city',
  parameters: {
    type: 'object',
    properties: {
      city: { type: 'string', maxLength: 12 },
      unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
    },
    required: ['city', 'unit'],
    additionalProperties: false,
  },
  strict: true,
};

test('responses.create with text.format json_schema: output_text parses and validates', async () => {
  // The Responses API has no seed: the sampled runs differ from run to run, and each must validate.
  for (const s of [{ temperature: 0 }, { temperature: 1 }, { temperature: 1, top_p: 0.9 }]) {
    const r = await client.responses.create({
      model: MODEL,
      input: 'Describe a city.',
      max_output_tokens: 300,
      text: { format: { type: 'json_schema', name: 'place', schema: PLACE, strict: true } },
      ...s,
    });
    assert.equal(r.status, 'completed', JSON.stringify(r.output));
    assertValid(PLACE, r.output_text, `output_text with ${JSON.stringify(s)}`);
    assert.equal(r.text.format.type, 'json_schema');
    assert.equal(r.text.format.name, 'place');
  }
});

test('responses.parse with a json_schema format returns output_parsed', async () => {
  const r = await client.responses.parse({
    model: MODEL,
    input: 'Describe a city.',
    max_output_tokens: 300,
    temperature: 0,
    text: { format: { type: 'json_schema', name: 'place', schema: PLACE, strict: true } },
  });
  assert.deepEqual(r.output_parsed, JSON.parse(r.output_text));
  assertValid(PLACE, r.output_text);
});

test('responses.create with function tools and tool_choice "required" returns a valid function_call', async () => {
  for (const s of [{ temperature: 0 }, { temperature: 1 }]) {
    const r = await client.responses.create({
      model: MODEL,
      input: [{ role: 'user', content: 'What is the weather in Paris?' }],
      tools: [WEATHER_TOOL],
      tool_choice: 'required',
      parallel_tool_calls: false,
      max_output_tokens: 300,
      ...s,
    });
    assert.equal(r.status, 'completed');
    const calls = r.output.filter((o) => o.type === 'function_call');
    assert.equal(calls.length, 1, JSON.stringify(r.output));
    assert.equal(calls[0].name, 'get_weather');
    assert.match(calls[0].call_id, /^call_/);
    assertValid(WEATHER_TOOL.parameters, calls[0].arguments, 'function_call arguments');
    assert.equal(r.output_text, '', 'a forced call has no text beside it');

    // The call and its output go back as input items.
    const next = await client.responses.create({
      model: MODEL,
      input: [
        { role: 'user', content: 'What is the weather in Paris?' },
        calls[0],
        { type: 'function_call_output', call_id: calls[0].call_id, output: '{"celsius": 18}' },
      ],
      tools: [WEATHER_TOOL],
      max_output_tokens: 8,
      temperature: 0,
    });
    assert.ok(['completed', 'incomplete'].includes(next.status));
  }
});

test('responses.stream with a forced function call: argument deltas and a final response with the call', async () => {
  const params = {
    model: MODEL,
    input: 'What is the weather in Tokyo?',
    tools: [WEATHER_TOOL],
    tool_choice: { type: 'function', name: 'get_weather' },
    parallel_tool_calls: false,
    max_output_tokens: 300,
    temperature: 0,
  };
  const plain = await client.responses.create(params);
  const stream = client.responses.stream(params);
  let args = '';
  const types = [];
  let done = null;
  stream.on('response.function_call_arguments.delta', (e) => {
    args += e.delta;
  });
  stream.on('response.function_call_arguments.done', (e) => {
    done = e;
  });
  for await (const event of stream) types.push(event.type);
  const final = await stream.finalResponse();
  assert.equal(types[0], 'response.created');
  assert.equal(types.at(-1), 'response.completed');
  assert.ok(types.includes('response.function_call_arguments.delta'), types.join(' '));
  assert.ok(types.includes('response.output_item.done'));
  const call = final.output.find((o) => o.type === 'function_call');
  assert.ok(call, JSON.stringify(final.output));
  assert.equal(call.name, 'get_weather');
  assert.equal(args, call.arguments);
  assert.equal(done?.arguments, call.arguments);
  assertValid(WEATHER_TOOL.parameters, call.arguments, 'streamed arguments');
  // Greedy: the same call as create's.
  assert.equal(call.arguments, plain.output.find((o) => o.type === 'function_call').arguments);
});

test('a bad schema or tool is a BadRequestError naming the Responses field', async () => {
  const cases = [
    [{ text: { format: { type: 'json_schema', name: 'x', schema: { type: 'object', properties: { a: { type: 'integer', multipleOf: 3 } } } } } }, 'text.format.schema', /multipleOf/],
    [{ tools: [{ ...WEATHER_TOOL, parameters: { type: 'object', properties: { a: { type: 'integer', multipleOf: 3 } } } }], tool_choice: 'required' }, 'tools[0].parameters', /multipleOf/],
    [{ tools: [{ ...WEATHER_TOOL, parameters: { type: 'object', properties: 'x' } }] }, 'tools[0].parameters', /properties/],
  ];
  for (const [extra, param, message] of cases) {
    await assert.rejects(
      client.responses.create({ model: MODEL, input: 'x', max_output_tokens: 8, ...extra }),
      (e) => {
        assert.equal(e.status, 400);
        assert.equal(e.param, param);
        assert.match(e.message, message);
        return true;
      },
      JSON.stringify(extra).slice(0, 120),
    );
  }
});
