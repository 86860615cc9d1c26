// The official `openai` npm client's Responses API (responses.create, responses.stream) against a
// running `gantry serve`, unchanged. run_e2e.sh starts the server and sets GANTRY_BASE_URL.
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
  timeout: 30_000,
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
