// Shared checks for the structured-output and tool-calling end-to-end tests: a real JSON Schema
// validator (ajv) and a JSON prefix check for generations cut short by max_tokens.
import assert from 'node:assert/strict';

import Ajv from 'ajv';
import Ajv2020 from 'ajv/dist/2020.js';

// Schemas are JSON Schema 2020-12 (prefixItems, $defs) unless they say otherwise, as the
// openai client's zod helper does ("$schema": draft-07). strict: false because the schemas under
// test carry keywords ajv's strict mode flags (e.g. annotations it does not know).
const ajv2020 = new Ajv2020({ strict: false, allErrors: true });
const ajv07 = new Ajv({ strict: false, allErrors: true });

// Parses `text` as JSON and validates it against `schema`; fails the test with the text and
// ajv's errors otherwise. Returns the parsed value.
export function assertValid(schema, text, what = 'output') {
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    assert.fail(`${what} is not JSON (${e.message}): ${JSON.stringify(text)}`);
  }
  assertValidValue(schema, value, what);
  return value;
}

export function assertValidValue(schema, value, what = 'value') {
  const ajv = /draft-07/.test(schema.$schema ?? '') ? ajv07 : ajv2020;
  const validate = ajv.compile(schema);
  assert.ok(
    validate(value),
    `${what} does not validate: ${JSON.stringify(value)}\n${ajv.errorsText(validate.errors)}`,
  );
}

// True when `text` is the beginning of some JSON document (what a generation constrained to
// JSON and cut short by max_tokens must be): a recursive-descent parse that reports running out
// of input apart from meeting a character no JSON document could have there.
export function isJsonPrefix(text) {
  const END = Symbol('end');
  let i = 0;
  const peek = () => {
    if (i >= text.length) throw END;
    return text[i];
  };
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  const expect = (c) => {
    if (peek() !== c) throw new Error(`expected ${c} at ${i}`);
    i++;
  };
  const literal = (word) => {
    for (const c of word) expect(c);
  };
  const string = () => {
    expect('"');
    for (;;) {
      const c = peek();
      i++;
      if (c === '"') return;
      if (c === '\\') {
        const e = peek();
        i++;
        if (e === 'u') {
          for (let k = 0; k < 4; k++) {
            if (!/[0-9a-fA-F]/.test(peek())) throw new Error(`bad \\u escape at ${i}`);
            i++;
          }
        } else if (!'"\\/bfnrt'.includes(e)) {
          throw new Error(`bad escape at ${i}`);
        }
      } else if (c < ' ') {
        throw new Error(`control character in a string at ${i}`);
      }
    }
  };
  const number = () => {
    const m = /^-?(0|[1-9][0-9]*)?(\.[0-9]*)?([eE][+-]?[0-9]*)?/.exec(text.slice(i));
    if (!m[0]) throw new Error(`expected a value at ${i}`);
    i += m[0].length;
    if (i >= text.length) throw END;
    if (!m[1] || (m[2] !== undefined && m[2].length === 1) || (m[3] !== undefined && !/[0-9]$/.test(m[3])))
      throw new Error(`malformed number at ${i}`);
  };
  const value = () => {
    ws();
    const c = peek();
    if (c === '{') {
      i++;
      ws();
      if (peek() === '}') return void i++;
      for (;;) {
        ws();
        string();
        ws();
        expect(':');
        value();
        ws();
        if (peek() === '}') return void i++;
        expect(',');
      }
    }
    if (c === '[') {
      i++;
      ws();
      if (peek() === ']') return void i++;
      for (;;) {
        value();
        ws();
        if (peek() === ']') return void i++;
        expect(',');
      }
    }
    if (c === '"') return string();
    if (c === 't') return literal('true');
    if (c === 'f') return literal('false');
    if (c === 'n') return literal('null');
    return number();
  };
  try {
    value();
    ws();
    return i === text.length;
  } catch (e) {
    if (e === END) return true;
    return false;
  }
}
