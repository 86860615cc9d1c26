// Tool calling with the official `openai` npm client against a running `gantry serve`: forced
// calls (tool_choice "required" or a named function) whose arguments the grammar constrains to
// the function's parameters schema, streamed and not, auto, and a history with tool results.
// The bundled model has no chat template, so tools use Gantry's generic JSON form. run_e2e.sh
// starts the server and sets GANTRY_BASE_URL.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import OpenAI from 'openai';

import { assertValid } from './lib/json_check.mjs';

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
  defaultHeaders: { 'Cache-Control': 'no-store' },
});

// Strings are bounded (a story model would otherwise fill them until max_tokens): the grammar
// guarantees valid arguments, not short ones.
const WEATHER = {
  type: 'object',
  properties: {
    city: { type: 'string', maxLength: 12 },
    unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
    days: { type: 'integer', minimum: 1, maximum: 7 },
  },
  required: ['city', 'unit'],
  additionalProperties: false,
};
const ADD = {
  type: 'object',
  properties: {
    a: { type: 'integer', minimum: -1000, maximum: 1000 },
    b: { type: 'integer', minimum: -1000, maximum: 1000 },
  },
  required: ['a', 'b'],
  additionalProperties: false,
};
const SEARCH = {
  type: 'object',
  properties: {
    query: { type: 'string', pattern: '^[a-z]{1,10}$' },
    filters: {
      type: 'array',
      items: { anyOf: [{ type: 'string', enum: ['new', 'old'] }, { type: 'integer', minimum: 0, maximum: 9 }] },
      maxItems: 2,
    },
  },
  required: ['query', 'filters'],
  additionalProperties: false,
};
const TOOLS = [
  { type: 'function', function: { name: 'get_weather', description: 'The weather in a city', parameters: WEATHER } },
  { type: 'function', function: { name: 'add', description: 'Adds two integers', parameters: ADD } },
  { type: 'function', function: { name: 'search', description: 'Searches the library', parameters: SEARCH } },
];
const SCHEMA_OF = Object.fromEntries(TOOLS.map((t) => [t.function.name, t.function.parameters]));
const MESSAGES = [{ role: 'user', content: 'What is the weather in Paris?' }];
// The generic JSON form spells every call out ({"tool_calls": [{"name": ..., "arguments": ...}]}),
// about one token per character with this model's 512-token vocabulary.
const MAX_TOKENS = 300;

function assertCall(call, allowed) {
  assert.equal(call.type, 'function');
  assert.match(call.id, /^call_/);
  assert.ok(allowed.includes(call.function.name), `unexpected function ${call.function.name}`);
  return assertValid(SCHEMA_OF[call.function.name], call.function.arguments, `${call.function.name} arguments`);
}

test('tool_choice "required": one call per choice, arguments valid, finish_reason tool_calls', async () => {
  const settings = [{ temperature: 0 }, { temperature: 1, seed: 1 }, { temperature: 1, seed: 2 }, { temperature: 1.2, seed: 3 }];
  const results = await Promise.all(
    settings.map((s) =>
      client.chat.completions.create({
        model: MODEL,
        messages: MESSAGES,
        tools: TOOLS,
        tool_choice: 'required',
        parallel_tool_calls: false,
        max_tokens: MAX_TOKENS,
        ...s,
      }),
    ),
  );
  for (const r of results) {
    const c = r.choices[0];
    assert.equal(c.finish_reason, 'tool_calls', JSON.stringify(c.message));
    assert.equal(c.message.role, 'assistant');
    assert.equal(c.message.tool_calls.length, 1, 'parallel_tool_calls: false allows exactly one call');
    assert.ok(!c.message.content, `no text beside a forced call: ${c.message.content}`);
    assertCall(c.message.tool_calls[0], ['get_weather', 'add', 'search']);
  }
});

test('a named function: every call is to that function, parallel or not', async () => {
  for (const name of ['add', 'search']) {
    for (const parallel_tool_calls of [false, undefined]) {
      const r = await client.chat.completions.create({
        model: MODEL,
        messages: MESSAGES,
        tools: TOOLS,
        tool_choice: { type: 'function', function: { name } },
        ...(parallel_tool_calls === undefined ? {} : { parallel_tool_calls }),
        max_tokens: MAX_TOKENS,
        temperature: 0,
      });
      const c = r.choices[0];
      if (parallel_tool_calls === false) {
        assert.equal(c.finish_reason, 'tool_calls', JSON.stringify(c.message));
        assert.equal(c.message.tool_calls.length, 1);
      }
      // Parallel calls may run past max_tokens (the model picks how many); what was returned as
      // calls is still well-formed.
      if (c.finish_reason === 'tool_calls') {
        assert.ok(c.message.tool_calls.length >= 1);
        const ids = new Set();
        for (const call of c.message.tool_calls) {
          assertCall(call, [name]);
          ids.add(call.id);
        }
        assert.equal(ids.size, c.message.tool_calls.length, 'call ids are distinct');
      } else {
        assert.equal(c.finish_reason, 'length');
      }
    }
  }
});

// Accumulates a streamed chat completion's delta.tool_calls fragments the way OpenAI documents:
// the first fragment of a call (by index) carries id, type and name; later ones append arguments.
async function collectToolCalls(stream) {
  const calls = [];
  let finish = null;
  let content = '';
  let fragments = 0;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      content += c.delta.content ?? '';
      for (const d of c.delta.tool_calls ?? []) {
        fragments++;
        if (!calls[d.index]) {
          assert.ok(d.id && d.function?.name, `the first fragment of call ${d.index} names it`);
          calls[d.index] = { id: d.id, type: d.type, function: { name: d.function.name, arguments: '' } };
        } else {
          assert.ok(!d.id || d.id === calls[d.index].id, 'a call keeps its id');
        }
        calls[d.index].function.arguments += d.function?.arguments ?? '';
      }
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return { calls, finish, content, fragments };
}

test('streamed forced calls: delta.tool_calls fragments add up to the non-streamed calls', async () => {
  for (const s of [{ temperature: 0 }, { temperature: 1, seed: 7 }]) {
    for (const tool_choice of ['required', { type: 'function', function: { name: 'get_weather' } }]) {
      const params = {
        model: MODEL,
        messages: MESSAGES,
        tools: TOOLS,
        tool_choice,
        parallel_tool_calls: false,
        max_tokens: MAX_TOKENS,
        ...s,
      };
      const full = await client.chat.completions.create(params);
      const streamed = await collectToolCalls(await client.chat.completions.create({ ...params, stream: true }));
      const what = `${JSON.stringify(s)} ${JSON.stringify(tool_choice)}`;
      assert.equal(streamed.finish, 'tool_calls', what);
      assert.equal(streamed.content, '', what);
      assert.equal(streamed.calls.length, 1, what);
      assertCall(streamed.calls[0], tool_choice === 'required' ? ['get_weather', 'add', 'search'] : ['get_weather']);
      // The same seed generates the same call (ids are fresh per response).
      const expected = full.choices[0].message.tool_calls[0];
      assert.equal(streamed.calls[0].function.name, expected.function.name, what);
      assert.equal(streamed.calls[0].function.arguments, expected.function.arguments, what);
    }
  }
});

test('the client\'s chat.completions.stream helper and finalChatCompletion()', async () => {
  const stream = client.chat.completions.stream({
    model: MODEL,
    messages: MESSAGES,
    tools: TOOLS,
    tool_choice: { type: 'function', function: { name: 'search' } },
    parallel_tool_calls: false,
    max_tokens: MAX_TOKENS,
    temperature: 0,
  });
  let argDeltas = '';
  const done = [];
  stream.on('tool_calls.function.arguments.delta', (e) => {
    argDeltas += e.arguments_delta;
  });
  stream.on('tool_calls.function.arguments.done', (e) => done.push(e));
  const final = await stream.finalChatCompletion();
  const c = final.choices[0];
  assert.equal(c.finish_reason, 'tool_calls');
  assert.equal(c.message.tool_calls.length, 1);
  const args = assertCall(c.message.tool_calls[0], ['search']);
  assert.equal(argDeltas, c.message.tool_calls[0].function.arguments);
  assert.equal(done.length, 1);
  assert.equal(done[0].name, 'search');
  assert.deepEqual(done[0].parsed_arguments ?? JSON.parse(done[0].arguments), args);
});

test('tool_choice "auto" returns text or valid calls; "none" returns text', async () => {
  for (const s of [{ temperature: 0 }, { temperature: 1, seed: 4 }]) {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: MESSAGES,
      tools: TOOLS,
      tool_choice: 'auto',
      max_tokens: 48,
      ...s,
    });
    const c = r.choices[0];
    assert.ok(['stop', 'length', 'tool_calls'].includes(c.finish_reason));
    if (c.finish_reason === 'tool_calls') {
      for (const call of c.message.tool_calls) assertCall(call, ['get_weather', 'add', 'search']);
    } else {
      assert.equal(typeof c.message.content, 'string');
      assert.ok(!c.message.tool_calls?.length);
    }
  }
  const none = await client.chat.completions.create({
    model: MODEL,
    messages: MESSAGES,
    tools: TOOLS,
    tool_choice: 'none',
    max_tokens: 24,
    temperature: 0,
  });
  assert.notEqual(none.choices[0].finish_reason, 'tool_calls');
  assert.equal(typeof none.choices[0].message.content, 'string');
});

test('a history with an assistant tool_calls turn and a tool result is accepted', async () => {
  const first = await client.chat.completions.create({
    model: MODEL,
    messages: MESSAGES,
    tools: TOOLS,
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
    parallel_tool_calls: false,
    max_tokens: MAX_TOKENS,
    temperature: 0,
  });
  const call = first.choices[0].message.tool_calls[0];
  const history = [
    ...MESSAGES,
    first.choices[0].message, // the assistant turn as the client returned it (content null)
    { role: 'tool', tool_call_id: call.id, content: JSON.stringify({ temperature: 21, sky: 'clear' }) },
  ];
  const next = await client.chat.completions.create({
    model: MODEL,
    messages: history,
    tools: TOOLS,
    max_tokens: 16,
    temperature: 0,
  });
  assert.ok(['stop', 'length', 'tool_calls'].includes(next.choices[0].finish_reason));
  // The tool result is part of the prompt.
  assert.ok(next.usage.prompt_tokens > first.usage.prompt_tokens);

  // A forced call works after a tool result too, and a hand-written history with content parts.
  const again = await client.chat.completions.create({
    model: MODEL,
    messages: [
      { role: 'system', content: 'You answer with tools.' },
      { role: 'user', content: [{ type: 'text', text: 'Add 2 and 3.' }] },
      {
        role: 'assistant',
        content: null,
        tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'add', arguments: '{"a": 2, "b": 3}' } }],
      },
      { role: 'tool', tool_call_id: 'call_1', content: [{ type: 'text', text: '5' }] },
      { role: 'user', content: 'Now add 5 and 5.' },
    ],
    tools: TOOLS,
    tool_choice: 'required',
    parallel_tool_calls: false,
    max_tokens: MAX_TOKENS,
    temperature: 0,
  });
  assert.equal(again.choices[0].finish_reason, 'tool_calls');
  assertCall(again.choices[0].message.tool_calls[0], ['get_weather', 'add', 'search']);
});

test('bad tool requests are 400 BadRequestErrors naming the field', async () => {
  const cases = [
    [{ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { a: { type: 'integer', multipleOf: 2 } } } } }], tool_choice: 'required' }, /^tools\[0\]\.function\.parameters/],
    [{ tools: [{ type: 'function', function: { name: 'f', parameters: 'not a schema' } }] }, /^tools\[0\]\.function\.parameters/],
    // Malformed schemas are refused under tool_choice auto (the default) too.
    [{ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'frobnicate' } } }] }, /^tools\[0\]\.function\.parameters$/],
    [{ tools: [TOOLS[0], { type: 'function', function: { name: 'g', parameters: { type: 'object', required: 'a' } } }] }, /^tools\[1\]\.function\.parameters$/],
    [{ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { a: { $ref: '#/$defs/none' } } } } }], tool_choice: 'auto' }, /^tools\[0\]\.function\.parameters$/],
    [{ tools: [{ type: 'function', function: { parameters: { type: 'object' } } }] }, /^tools\[0\]\.function\.name/],
    [{ tools: TOOLS, tool_choice: { type: 'function', function: { name: 'nope' } } }, /^tool_choice/],
    [{ tool_choice: 'required' }, /^tool_choice|^tools/],
    [{ tools: TOOLS, tool_choice: 'sometimes' }, /^tool_choice/],
  ];
  for (const [extra, param] of cases) {
    await assert.rejects(
      client.chat.completions.create({ model: MODEL, messages: MESSAGES, max_tokens: 8, ...extra }),
      (e) => {
        assert.ok(e instanceof OpenAI.BadRequestError, `got ${e?.constructor?.name}: ${e}`);
        assert.match(e.param ?? '', param);
        return true;
      },
      JSON.stringify(extra).slice(0, 160),
    );
  }
});
