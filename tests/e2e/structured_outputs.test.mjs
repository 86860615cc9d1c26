// Structured outputs with the official `openai` npm client against a running `gantry serve`:
// response_format json_schema / json_object and the `grammar` extension, enforced by constrained
// decoding, so even the bundled 260K story model's outputs parse and validate with a real JSON
// Schema validator (ajv). run_e2e.sh starts the server and sets GANTRY_BASE_URL.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import OpenAI from 'openai';
import { zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';

import { assertValid, assertValidValue, isJsonPrefix } from './lib/json_check.mjs';

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
  // Seeds and temperatures must each generate, not replay the response cache.
  defaultHeaders: { 'Cache-Control': 'no-store' },
});

// The schemas cover what issue 17 lists. A story model writes stories into unbounded strings
// until max_tokens runs out, so strings that sampling reaches carry maxLength, a pattern or an
// enum: the grammar can force a document to be valid, not to be short.
const SCHEMAS = {
  nested_objects: {
    type: 'object',
    properties: {
      name: { type: 'string', maxLength: 16 },
      age: { type: 'integer', minimum: 0, maximum: 120 },
      nickname: { type: 'string', maxLength: 8 },
      address: {
        type: 'object',
        properties: {
          street: { type: 'string', maxLength: 20 },
          zip: { type: 'string', pattern: '^[0-9]{5}$' },
          geo: {
            type: 'object',
            properties: { lat: { type: 'number', minimum: 0, maximum: 90 }, north: { type: 'boolean' } },
            required: ['lat', 'north'],
            additionalProperties: false,
          },
        },
        required: ['street', 'zip', 'geo'],
        additionalProperties: false,
      },
    },
    required: ['name', 'age', 'address'],
    additionalProperties: false,
  },
  array_bounds: {
    type: 'object',
    properties: {
      items: {
        type: 'array',
        items: {
          type: 'object',
          properties: {
            id: { type: 'integer', minimum: 1, maximum: 999 },
            status: { enum: ['open', 'closed'] },
          },
          required: ['id', 'status'],
          additionalProperties: false,
        },
        minItems: 2,
        maxItems: 4,
      },
      tags: { type: 'array', items: { type: 'string', maxLength: 6 }, maxItems: 3 },
      pair: { type: 'array', prefixItems: [{ type: 'integer' }, { type: 'boolean' }], items: false },
    },
    required: ['items', 'tags', 'pair'],
    additionalProperties: false,
  },
  top_level_array: {
    type: 'array',
    items: { type: 'boolean' },
    minItems: 3,
    maxItems: 3,
  },
  enums_and_consts: {
    type: 'object',
    properties: {
      color: { type: 'string', enum: ['red', 'green', 'blue'] },
      size: { enum: [1, 2, 3] },
      mixed: { enum: ['a', 1, null, true, { k: [1, 2] }] },
      kind: { const: 'shape' },
    },
    required: ['color', 'size', 'mixed', 'kind'],
    additionalProperties: false,
  },
  any_of: {
    type: 'object',
    properties: {
      value: {
        anyOf: [
          { type: 'integer', minimum: -5, maximum: 5 },
          { type: 'string', maxLength: 5 },
          { type: 'null' },
        ],
      },
      shape: {
        anyOf: [
          {
            type: 'object',
            properties: { circle: { type: 'integer', minimum: 1, maximum: 9 } },
            required: ['circle'],
            additionalProperties: false,
          },
          {
            type: 'object',
            properties: { w: { type: 'integer', minimum: 1, maximum: 9 }, h: { type: 'integer', minimum: 1, maximum: 9 } },
            required: ['w', 'h'],
            additionalProperties: false,
          },
        ],
      },
      maybe: { type: ['string', 'null'], maxLength: 4 },
    },
    required: ['value', 'shape', 'maybe'],
    additionalProperties: false,
  },
  ref_recursion: {
    $defs: {
      node: {
        type: 'object',
        properties: {
          label: { $ref: '#/$defs/label' },
          children: { type: 'array', items: { $ref: '#/$defs/node' }, maxItems: 2 },
        },
        required: ['label', 'children'],
        additionalProperties: false,
      },
      label: { type: 'string', pattern: '^[a-z]{1,6}$' },
    },
    type: 'object',
    properties: { root: { $ref: '#/$defs/node' }, name: { $ref: '#/$defs/label' } },
    required: ['root', 'name'],
    additionalProperties: false,
  },
  string_patterns: {
    type: 'object',
    properties: {
      code: { type: 'string', pattern: '^[A-Z]{2}-[0-9]{3}$' },
      phone: { type: 'string', pattern: '^\\+?[0-9]{7,10}$' },
      answer: { type: 'string', pattern: '^(yes|no|maybe)$' },
      hex: { type: 'string', pattern: '^#[0-9a-f]{6}$' },
      word: { type: 'string', minLength: 2, maxLength: 5 },
    },
    required: ['code', 'phone', 'answer', 'hex', 'word'],
    additionalProperties: false,
  },
  integer_ranges: {
    type: 'object',
    properties: {
      negative: { type: 'integer', minimum: -100, maximum: -10 },
      exclusive: { type: 'integer', exclusiveMinimum: 0, exclusiveMaximum: 10 },
      big: { type: 'integer', minimum: 1000, maximum: 1000000 },
      percent: { type: 'number', minimum: 0, maximum: 100 },
      count: { type: 'integer', minimum: 7, maximum: 7 },
    },
    required: ['negative', 'exclusive', 'big', 'percent', 'count'],
    additionalProperties: false,
  },
  required_and_optional: {
    type: 'object',
    properties: {
      id: { type: 'integer', minimum: 0, maximum: 99 },
      a: { type: 'boolean' },
      b: { type: 'null' },
      c: { type: 'string', maxLength: 3 },
      d: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 9 }, maxItems: 2 },
    },
    required: ['id'],
    additionalProperties: false,
  },
};

// Greedy and sampled, several seeds each: every output must be a whole, valid document.
const SETTINGS = [
  { temperature: 0 },
  { temperature: 0.8, seed: 1 },
  { temperature: 0.8, seed: 2 },
  { temperature: 1.0, seed: 3 },
  { temperature: 1.0, seed: 4 },
  { temperature: 1.3, seed: 5, top_p: 0.95 },
];
const MAX_TOKENS = 400;

function schemaFormat(name, schema) {
  return { type: 'json_schema', json_schema: { name, schema, strict: true } };
}

// The same schemas on a model with Llama's 32000-token vocabulary (tests/data/llama-2-tiny-random,
// random weights: the vocabulary the 1.1B synthetic models use), where tokens are long and
// multi-character, so the masks see far more ways to leave a document.
const MODELS = [
  { model: MODEL, settings: SETTINGS },
  { model: 'llama-tiny', settings: SETTINGS.slice(0, 4) },
];

for (const { model, settings } of MODELS) {
  for (const [name, schema] of Object.entries(SCHEMAS)) {
    test(`json_schema ${name} on ${model}: every output parses and validates (greedy and sampled)`, async () => {
      const results = await Promise.all(
        settings.map((s) =>
          client.chat.completions.create({
            model,
            messages: [{ role: 'user', content: PROMPT }],
            max_tokens: MAX_TOKENS,
            response_format: schemaFormat(name, schema),
            ...s,
          }),
        ),
      );
      results.forEach((r, k) => {
        const what = `${name} on ${model} with ${JSON.stringify(settings[k])}`;
        const c = r.choices[0];
        // A recursive schema admits documents without end, and a random-weight model may take
        // that path until max_tokens: then what it wrote is still a valid start.
        if (model !== MODEL && name === 'ref_recursion' && c.finish_reason === 'length') {
          assert.ok(isJsonPrefix(c.message.content), `${what}: not a JSON prefix`);
          return;
        }
        assert.equal(c.finish_reason, 'stop', `${what} did not finish: ${JSON.stringify(c.message.content)}`);
        assertValid(schema, c.message.content, what);
        assert.ok(r.usage.completion_tokens <= MAX_TOKENS);
      });
    });
  }
}

test('json_schema streamed: the deltas add up to a valid document equal to the non-streamed one', async () => {
  const schema = SCHEMAS.nested_objects;
  for (const s of [{ temperature: 0 }, { temperature: 1, seed: 11 }]) {
    const params = {
      model: MODEL,
      messages: [{ role: 'user', content: PROMPT }],
      max_tokens: MAX_TOKENS,
      response_format: schemaFormat('nested', schema),
      ...s,
    };
    const full = await client.chat.completions.create(params);
    let text = '';
    let finish = null;
    for await (const chunk of await client.chat.completions.create({ ...params, stream: true })) {
      for (const c of chunk.choices) {
        text += c.delta.content ?? '';
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    assert.equal(finish, 'stop');
    assertValid(schema, text, `streamed ${JSON.stringify(s)}`);
    assert.equal(text, full.choices[0].message.content);
  }
});

test('json_schema with n choices: each choice is valid', async () => {
  const schema = SCHEMAS.enums_and_consts;
  const r = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: PROMPT }],
    max_tokens: MAX_TOKENS,
    n: 4,
    temperature: 1,
    seed: 21,
    response_format: schemaFormat('enums', schema),
  });
  assert.equal(r.choices.length, 4);
  for (const c of r.choices) {
    assert.equal(c.finish_reason, 'stop');
    assertValid(schema, c.message.content, `choice ${c.index}`);
  }
});

test('json_schema on /v1/completions (response_format as an extension) validates too', async () => {
  const schema = SCHEMAS.integer_ranges;
  const r = await client.completions.create({
    model: MODEL,
    prompt: PROMPT,
    max_tokens: MAX_TOKENS,
    temperature: 0.9,
    seed: 8,
    response_format: schemaFormat('ranges', schema),
  });
  assert.equal(r.choices[0].finish_reason, 'stop');
  assertValid(schema, r.choices[0].text);
});

test('json_object: a free-form object is JSON all along, and a whole object when it closes', async () => {
  // The story model keeps writing inside free-form keys and strings, so within max_tokens its
  // object is usually cut short: then the text must still be the beginning of a JSON object.
  const free = await Promise.all(
    [{ temperature: 0 }, { temperature: 1, seed: 1 }, { temperature: 1.2, seed: 2 }].map((s) =>
      client.chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: PROMPT }],
        max_tokens: 64,
        response_format: { type: 'json_object' },
        ...s,
      }),
    ),
  );
  for (const r of free) {
    const { content } = r.choices[0].message;
    assert.match(content, /^\s*\{/);
    if (r.choices[0].finish_reason === 'stop') {
      const v = JSON.parse(content);
      assert.ok(v !== null && typeof v === 'object' && !Array.isArray(v), content);
    } else {
      assert.equal(r.choices[0].finish_reason, 'length');
      assert.ok(isJsonPrefix(content), `not a JSON prefix: ${JSON.stringify(content)}`);
    }
  }

  // logit_bias on '}' (stories260K's byte token <0x7D>, id 3 + 0x7D) makes the model close the
  // object as soon as the grammar allows: generation then ends by itself with a whole object.
  const closed = await Promise.all(
    [{ temperature: 0 }, { temperature: 1, seed: 3 }].map((s) =>
      client.chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: PROMPT }],
        max_tokens: 64,
        response_format: { type: 'json_object' },
        logit_bias: { 128: 100 },
        ...s,
      }),
    ),
  );
  for (const r of closed) {
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.deepEqual(JSON.parse(r.choices[0].message.content), {});
  }
});

test('chat.completions.parse with zodResponseFormat returns message.parsed matching the zod schema', async () => {
  const Movie = z.object({
    title: z.string().max(20),
    year: z.number().int().min(1900).max(2100),
    genre: z.enum(['drama', 'comedy', 'horror']),
    tags: z.array(z.string().max(8)).min(1).max(3),
    rating: z.number().min(0).max(10).nullable(),
    sequel: z.object({ planned: z.boolean(), year: z.number().int().min(2000).max(2030).nullable() }),
  });
  const format = zodResponseFormat(Movie, 'movie');
  for (const s of [{ temperature: 0 }, { temperature: 1, seed: 5 }, { temperature: 1, seed: 6 }]) {
    const r = await client.chat.completions.parse({
      model: MODEL,
      messages: [{ role: 'user', content: PROMPT }],
      max_tokens: MAX_TOKENS,
      response_format: format,
      ...s,
    });
    const msg = r.choices[0].message;
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.ok(msg.parsed, `no parsed message for ${JSON.stringify(s)}: ${msg.content}`);
    // The SDK parsed the content with zod; check it against the JSON schema it sent as well.
    assert.deepEqual(Movie.parse(msg.parsed), msg.parsed);
    assert.deepEqual(msg.parsed, JSON.parse(msg.content));
    assertValidValue(format.json_schema.schema, msg.parsed, 'parsed');
  }
});

test('the grammar extension (llama.cpp GBNF) constrains the output', async () => {
  const grammar = 'root ::= answer " " num\nanswer ::= "yes" | "no"\nnum ::= [1-9] [0-9]?';
  for (const s of [{ temperature: 0 }, { temperature: 1.2, seed: 9 }]) {
    const r = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: PROMPT }],
      max_tokens: 16,
      grammar,
      ...s,
    });
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.match(r.choices[0].message.content, /^(yes|no) [1-9][0-9]?$/);
  }
});

test('max_tokens too small for the schema ends with finish_reason "length", streamed and not', async () => {
  const schema = SCHEMAS.nested_objects;
  const params = {
    model: MODEL,
    messages: [{ role: 'user', content: PROMPT }],
    max_tokens: 6,
    temperature: 0,
    response_format: schemaFormat('nested', schema),
  };
  const r = await client.chat.completions.create(params);
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 6);
  assert.ok(isJsonPrefix(r.choices[0].message.content), r.choices[0].message.content);
  let finish = null;
  let text = '';
  for await (const chunk of await client.chat.completions.create({ ...params, stream: true })) {
    for (const c of chunk.choices) {
      text += c.delta.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(finish, 'length');
  assert.equal(text, r.choices[0].message.content);

  // A grammar whose only document is longer than max_tokens allows.
  const long = await client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: PROMPT }],
    max_tokens: 8,
    grammar: 'root ::= "a"{40}',
  });
  assert.equal(long.choices[0].finish_reason, 'length');
  assert.match(long.choices[0].message.content, /^a+$/);
});

test('a bad schema is a 400 BadRequestError naming the field and the feature', async () => {
  const cases = [
    [
      schemaFormat('m', { type: 'object', properties: { a: { type: 'integer', multipleOf: 3 } } }),
      'response_format.json_schema.schema',
      /multipleOf/,
    ],
    [schemaFormat('t', { type: 'frobnicate' }), 'response_format.json_schema.schema', /frobnicate/],
    [
      schemaFormat('r', { type: 'object', properties: { a: { $ref: '#/$defs/missing' } } }),
      'response_format.json_schema.schema',
      /missing/,
    ],
    [
      schemaFormat('u', { type: 'array', items: { type: 'integer' }, uniqueItems: true }),
      'response_format.json_schema.schema',
      /uniqueItems/,
    ],
    [
      // Too large: more sub-schemas than the compiler takes (bounded compile time and memory).
      schemaFormat('big', {
        type: 'object',
        properties: Object.fromEntries(
          Array.from({ length: 5000 }, (_, k) => [`p${k}`, { type: 'integer' }]),
        ),
      }),
      'response_format.json_schema.schema',
      /too large/,
    ],
    [
      { type: 'json_schema', json_schema: { name: 'x' } },
      'response_format.json_schema.schema',
      /required/,
    ],
    [{ type: 'xml' }, 'response_format.type', /xml/],
  ];
  for (const [response_format, param, message] of cases) {
    await assert.rejects(
      client.chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: PROMPT }],
        max_tokens: 8,
        response_format,
      }),
      (e) => {
        assert.ok(e instanceof OpenAI.BadRequestError, `got ${e?.constructor?.name}: ${e}`);
        assert.equal(e.status, 400);
        assert.equal(e.param, param);
        assert.match(e.error.message, message);
        return true;
      },
      JSON.stringify(response_format).slice(0, 120),
    );
  }
  // A GBNF grammar that does not compile.
  await assert.rejects(
    client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: PROMPT }],
      max_tokens: 8,
      grammar: 'root ::= undefined-rule',
    }),
    (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, `got ${e?.constructor?.name}: ${e}`);
      assert.equal(e.param, 'grammar');
      assert.match(e.error.message, /undefined-rule/);
      return true;
    },
  );
});
