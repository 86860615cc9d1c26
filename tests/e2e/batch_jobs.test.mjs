// The OpenAI Batch API through the official `openai` npm client, unchanged: upload a JSONL file
// of 20 requests (files.create sends multipart/form-data), create the batch, poll it until it
// completes, and read the output file. Also the native /v1/jobs API with a plain fetch.
//
//   GANTRY_BASE_URL=http://127.0.0.1:8080 node --test tests/e2e/batch_jobs.test.mjs
import assert from 'node:assert/strict';
import { test } from 'node:test';

import OpenAI, { toFile } from 'openai';

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

test('a batch of 20 requests runs end to end with the openai client', async () => {
  const lines = [];
  for (let i = 0; i < 20; i++) {
    lines.push(
      JSON.stringify({
        custom_id: `req-${i}`,
        method: 'POST',
        url: '/v1/chat/completions',
        body: {
          model: MODEL,
          messages: [{ role: 'user', content: `Tell story number ${i}` }],
          max_tokens: 8,
        },
      }),
    );
  }
  const file = await client.files.create({
    file: await toFile(Buffer.from(lines.join('\n') + '\n'), 'batch.jsonl'),
    purpose: 'batch',
  });
  assert.match(file.id, /^file-/);
  assert.equal(file.purpose, 'batch');
  assert.equal(file.filename, 'batch.jsonl');

  const created = await client.batches.create({
    input_file_id: file.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
    metadata: { suite: 'e2e' },
  });
  assert.equal(created.object, 'batch');
  assert.equal(created.status, 'in_progress');
  assert.equal(created.request_counts.total, 20);

  let batch = created;
  const deadline = Date.now() + 60_000;
  while (batch.status !== 'completed' && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    batch = await client.batches.retrieve(created.id);
    assert.ok(
      ['in_progress', 'finalizing', 'completed'].includes(batch.status),
      `unexpected status ${batch.status}`,
    );
  }
  assert.equal(batch.status, 'completed');
  assert.deepEqual(batch.request_counts, { total: 20, completed: 20, failed: 0 });
  assert.equal(batch.metadata.suite, 'e2e');
  assert.ok(batch.output_file_id);
  assert.equal(batch.error_file_id, null);
  assert.ok(batch.completed_at >= batch.in_progress_at);

  const content = await client.files.content(batch.output_file_id);
  const out = (await content.text())
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.equal(out.length, 20);
  const ids = new Set(out.map((o) => o.custom_id));
  for (let i = 0; i < 20; i++) assert.ok(ids.has(`req-${i}`), `req-${i} has a result`);
  for (const o of out) {
    assert.equal(o.error, null);
    assert.equal(o.response.status_code, 200);
    assert.equal(o.response.body.object, 'chat.completion');
    assert.equal(o.response.body.usage.completion_tokens, 8);
  }
});

test('a batch with a bad line fails validation with the line number', async () => {
  const good = JSON.stringify({
    custom_id: 'a',
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model: MODEL, messages: [{ role: 'user', content: 'x' }], max_tokens: 2 },
  });
  const file = await client.files.create({
    file: await toFile(Buffer.from(`${good}\n{"custom_id":"b","url":"/v1/embeddings"}\n`), 'b.jsonl'),
    purpose: 'batch',
  });
  const batch = await client.batches.create({
    input_file_id: file.id,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
  });
  assert.equal(batch.status, 'failed');
  assert.equal(batch.errors.data[0].line, 2);
});

test('a batch can be cancelled', async () => {
  const lines = [];
  for (let i = 0; i < 50; i++) {
    lines.push(
      JSON.stringify({
        custom_id: `c-${i}`,
        method: 'POST',
        url: '/v1/completions',
        body: { model: MODEL, prompt: 'Once', max_tokens: 200, ignore_eos: true },
      }),
    );
  }
  const file = await client.files.create({
    file: await toFile(Buffer.from(lines.join('\n')), 'c.jsonl'),
    purpose: 'batch',
  });
  const batch = await client.batches.create({
    input_file_id: file.id,
    endpoint: '/v1/completions',
    completion_window: '24h',
  });
  const cancelling = await client.batches.cancel(batch.id);
  assert.ok(['cancelling', 'cancelled'].includes(cancelling.status));
  let b = cancelling;
  const deadline = Date.now() + 30_000;
  while (b.status !== 'cancelled' && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    b = await client.batches.retrieve(batch.id);
  }
  assert.equal(b.status, 'cancelled');
  assert.equal(b.request_counts.total, 50);
  assert.ok(b.request_counts.failed > 0, 'the cancelled lines are counted as failed');
});

test('the jobs API: submit, wait, fetch', async () => {
  const res = await fetch(`${baseURL}/v1/jobs`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Prefer: 'wait=30' },
    body: JSON.stringify({
      endpoint: '/v1/chat/completions',
      body: { model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 },
    }),
  });
  assert.equal(res.status, 200);
  const job = await res.json();
  assert.equal(job.status, 'succeeded');
  assert.equal(job.result.object, 'chat.completion');
  const again = await (await fetch(`${baseURL}${job.urls.get}`)).json();
  assert.equal(again.id, job.id);
  assert.equal(again.usage.completion_tokens, 4);
});
