// `mpt serve`: the OpenAI-compatible server answers as `generate` does, streams the same text, and
// refuses bad requests with OpenAI-shaped errors and the right status codes. Tiny fixture model, port 0.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { generate, type GenerateOptions } from '../src/generate/generate.js';
import { MptServer } from '../src/serve/index.js';
import { CHAT_STOP, hasOwnChatTemplate, renderChat } from '../src/serve/chat-template.js';
import { OrderedMap, toJson } from '../src/serve/ordered-json.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Tokenizer } from '../src/tokenizer/index.js';
import { fixture, projectRoot } from './fixtures.js';
import { fixtureModel } from './fixture-model.js';

const dir = fixture('mosaic-gpt-tiny');
const model = await fixtureModel('mosaic-gpt-tiny');
const tokenizer = Tokenizer.fromFolder(dir);
const logLines: string[] = [];
const server = new MptServer({ model, tokenizer, modelId: 'tiny', maxTokensDefault: 16, maxBatch: 4, maxBodyBytes: 64 * 1024, log: (l) => logLines.push(l) });
const url = await server.listen(0);
after(() => server.close());

const greedy = (prompt: number[], extra: Partial<GenerateOptions> = {}) =>
  generate(model, tokenizer, [prompt], { maxNewTokens: 12, temperature: 0, eosId: tokenizer.eosId, ...extra }).then((r) => r[0]);

async function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(url + path, { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body), headers: { 'Content-Type': 'application/json', ...headers } });
  return { status: res.status, headers: res.headers, json: await res.json() as any };
}

/** A streamed response's events, parsed; the last must be [DONE]. */
async function stream(path: string, body: object): Promise<any[]> {
  const res = await fetch(url + path, { method: 'POST', body: JSON.stringify({ ...body, stream: true }) });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
  const events = (await res.text()).split('\n\n').filter((e) => e !== '').map((e) => {
    assert.match(e, /^data: /);
    return e.slice('data: '.length);
  });
  assert.equal(events.pop(), '[DONE]');
  return events.map((e) => JSON.parse(e));
}

function assertError(r: { status: number; json: any }, status: number, param: string | null, message: RegExp) {
  assert.equal(r.status, status, JSON.stringify(r.json));
  assert.deepEqual(Object.keys(r.json.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(r.json.error.param, param);
  assert.match(r.json.error.message, message);
}

const prompt = 'The quick brown fox';

test('GET /v1/models lists the served model; /health answers', async () => {
  const models = await (await fetch(url + '/v1/models')).json() as any;
  assert.equal(models.object, 'list');
  assert.deepEqual(models.data.map((m: any) => [m.id, m.object, m.max_model_len]), [['tiny', 'model', 256]]);
  assert.equal(((await (await fetch(url + '/v1/models/tiny')).json()) as any).id, 'tiny');
  assert.equal((await fetch(url + '/v1/models/gpt-4')).status, 404);
  const health = await fetch(url + '/health');
  assert.equal(health.status, 200);
  assert.deepEqual(await health.json(), { status: 'ok' });
});

test('a greedy completion is what generate gives for the same prompt: tokens, text, usage', async () => {
  const ids = tokenizer.encode(prompt);
  const expected = await greedy(ids);
  const r = await post('/v1/completions', { model: 'tiny', prompt, max_tokens: 12, temperature: 0, return_token_ids: true });
  assert.equal(r.status, 200);
  assert.equal(r.json.object, 'text_completion');
  assert.match(r.json.id, /^cmpl-/);
  const [choice] = r.json.choices;
  assert.deepEqual(choice.token_ids, expected.ids);
  assert.equal(choice.text, expected.text);
  assert.equal(choice.finish_reason, 'length');
  assert.deepEqual(r.json.usage, { prompt_tokens: ids.length, completion_tokens: 12, total_tokens: ids.length + 12 });
  // The same prompt as token ids; and without max_tokens, the server's default (16).
  const byIds = await post('/v1/completions', { prompt: ids, max_tokens: 12, temperature: 0 });
  assert.equal(byIds.json.choices[0].text, expected.text);
  const byDefault = await post('/v1/completions', { prompt, temperature: 0 });
  assert.equal(byDefault.json.usage.completion_tokens, 16);
});

test('several prompts (strings or id lists) get one choice each, as each alone', async () => {
  const texts = [prompt, 'def fib(n):\n    return', 'Hello'];
  const alone = await Promise.all(texts.map((t) => greedy(tokenizer.encode(t), { maxNewTokens: 8 })));
  const r = await post('/v1/completions', { prompt: texts, max_tokens: 8, temperature: 0 });
  assert.deepEqual(r.json.choices.map((c: any) => [c.index, c.text]), alone.map((a, i) => [i, a.text]));
  assert.equal(r.json.usage.completion_tokens, alone.reduce((n, a) => n + a.ids.length, 0));
  const byIds = await post('/v1/completions', { prompt: texts.map((t) => tokenizer.encode(t)), max_tokens: 8, temperature: 0 });
  assert.deepEqual(byIds.json.choices.map((c: any) => c.text), alone.map((a) => a.text));
});

test('streamed chunks concatenate to the non-streamed text; usage comes last when asked', async () => {
  const body = { prompt, max_tokens: 20, temperature: 0.9, seed: 3 };
  const whole = await post('/v1/completions', body);
  const events = await stream('/v1/completions', { ...body, stream_options: { include_usage: true } });
  const usage = events.pop();
  assert.deepEqual(usage.choices, []);
  assert.deepEqual(usage.usage, whole.json.usage);
  const pieces = events.filter((e) => e.choices[0].finish_reason === null);
  assert.ok(pieces.length > 1, 'the text comes in several chunks');
  assert.equal(pieces.map((e) => e.choices[0].text).join(''), whole.json.choices[0].text);
  assert.equal(events.at(-1).choices[0].finish_reason, whole.json.choices[0].finish_reason);
  assert.ok(events.every((e) => e.object === 'text_completion' && e.id === events[0].id && e.usage === null));
});

test('a stop string ends the text just before it, with finish_reason "stop"', async () => {
  const free = await greedy(tokenizer.encode(prompt));
  const stop = tokenizer.decode(free.ids.slice(4, 6));
  const r = await post('/v1/completions', { prompt, max_tokens: 12, temperature: 0, stop: ['never appears', stop] });
  assert.equal(r.json.choices[0].finish_reason, 'stop');
  assert.equal(r.json.choices[0].text, free.text.slice(0, free.text.indexOf(stop)));
  const events = await stream('/v1/completions', { prompt, max_tokens: 12, temperature: 0, stop });
  assert.equal(events.map((e) => e.choices[0].text).join(''), r.json.choices[0].text);
  assert.equal(events.at(-1).choices[0].finish_reason, 'stop');
});

test('a reply that ends with EOS keeps the text held back as a possible stop string', async () => {
  const free = await greedy(tokenizer.encode(prompt));
  const k = free.ids.findIndex((id, i) => i >= 2 && free.ids.indexOf(id) === i); // a token first seen at k ≥ 2
  const last = tokenizer.decode([free.ids[k - 1]]);
  assert.ok(last.length > 0);
  // EOS right after a token whose text begins a stop string: that text was held back, and is the reply's end.
  const [r] = await generate(model, tokenizer, [tokenizer.encode(prompt)], { maxNewTokens: 12, temperature: 0, eosId: free.ids[k], stop: [last + '\u0000never'] });
  assert.equal(r.finishReason, 'eos');
  assert.deepEqual(r.ids, free.ids.slice(0, k));
  assert.equal(r.text, tokenizer.decode(free.ids.slice(0, k)));
});

test('chat: the plain-text template, the reply as generate gives it, streamed the same', async () => {
  const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello.' }, { role: 'user', content: [{ type: 'text', text: 'Name a fox.' }] }];
  const rendered = renderChat([...messages.slice(0, 3), { role: 'user', content: 'Name a fox.' }] as any);
  assert.equal(rendered, 'Be brief.\n\nUser: Hi\n\nAssistant: Hello.\n\nUser: Name a fox.\n\nAssistant:');
  const expected = await greedy(tokenizer.encode(rendered), { stop: [CHAT_STOP] });
  const r = await post('/v1/chat/completions', { model: 'tiny', messages, max_tokens: 12, temperature: 0 });
  assert.equal(r.status, 200);
  assert.equal(r.json.object, 'chat.completion');
  assert.deepEqual(r.json.choices[0].message, { role: 'assistant', content: expected.text.trimStart() });
  assert.equal(r.json.usage.prompt_tokens, tokenizer.encode(rendered).length);
  assert.equal(r.json.usage.completion_tokens, expected.ids.length);
  const events = await stream('/v1/chat/completions', { messages, max_tokens: 12, temperature: 0 });
  assert.deepEqual(events[0].choices[0].delta, { role: 'assistant', content: '' });
  assert.ok(events.every((e) => e.object === 'chat.completion.chunk'));
  assert.equal(events.map((e) => e.choices[0].delta.content ?? '').join(''), r.json.choices[0].message.content);
  assert.equal(events.at(-1).choices[0].finish_reason, r.json.choices[0].finish_reason);
});

test('bad requests get OpenAI-shaped errors with the right status', async () => {
  assertError(await post('/v1/completions', '{"prompt": "x",'), 400, null, /not valid JSON/);
  assertError(await post('/v1/completions', '[1, 2]'), 400, null, /JSON object/);
  assertError(await post('/v1/completions', { max_tokens: 3 }), 400, 'prompt', /required/);
  assertError(await post('/v1/completions', { prompt: 'x', temperature: 'hot' }), 400, 'temperature', /must be a number/);
  assertError(await post('/v1/completions', { prompt: 'x', max_tokens: 2.5 }), 400, 'max_tokens', /integer/);
  assertError(await post('/v1/completions', { prompt: 'x', stream: 'yes' }), 400, 'stream', /true or false/);
  assertError(await post('/v1/completions', { prompt: 'x', stop: [1] }), 400, 'stop', /strings/);
  assertError(await post('/v1/completions', { prompt: 'x', top_p: 0 }), 400, 'top_p', /> 0/);
  assertError(await post('/v1/completions', { prompt: 'x', max_token: 3 }), 400, 'max_token', /unrecognized/);
  assertError(await post('/v1/completions', { prompt: [1, 99999] }), 400, 'prompt', /99999 is not a token id/);
  assertError(await post('/v1/completions', { prompt: 'x', n: 2 }), 400, 'n', /not supported/);
  assertError(await post('/v1/completions', { prompt: 'x', model: 'gpt-4' }), 404, 'model', /`gpt-4` does not exist/);
  assertError(await post('/v1/completions', { prompt: new Array(300).fill(510) }), 400, 'prompt', /maximum context length is 256 tokens/);
  const tooMuch = await post('/v1/completions', { prompt: new Array(250).fill(510), max_tokens: 10 });
  assertError(tooMuch, 400, 'max_tokens', /you requested 260 \(250 in the prompt, 10 for the completion\)/);
  assert.equal(tooMuch.json.error.code, 'context_length_exceeded');
  assertError(await post('/v1/completions', { prompt: 'x'.repeat(100_000) }), 413, null, /larger than the server's limit/);
  assertError(await post('/v1/completions', { prompt: ['a', 'b', 'c', 'd', 'e'] }), 400, 'prompt', /at most 4 prompts/);
  assertError(await post('/v1/chat/completions', { messages: [] }), 400, 'messages', /non-empty/);
  assertError(await post('/v1/chat/completions', { messages: [{ role: 'robot', content: 'x' }] }), 400, 'messages[0].role', /must be/);
  assertError(await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function' }] }), 400, 'tools', /not supported/);
  const get = await fetch(url + '/v1/completions');
  assert.equal(get.status, 405);
  assert.equal(get.headers.get('allow'), 'POST');
  assert.match(((await get.json()) as any).error.message, /GET is not allowed/);
  const missing = await fetch(url + '/v2/anything');
  assert.equal(missing.status, 404);
  assert.match(((await missing.json()) as any).error.message, /invalid URL/);
  // Neutral values of unsupported knobs are accepted (clients send them by default).
  const neutral = await post('/v1/completions', { prompt: 'x', max_tokens: 1, n: 1, echo: false, logprobs: null, presence_penalty: 0, logit_bias: {}, user: 'u1' });
  assert.equal(neutral.status, 200);
});

test('one log line per request: method, path, status, tokens, ms', async () => {
  logLines.length = 0;
  await post('/v1/completions', { prompt, max_tokens: 3, temperature: 0 });
  await post('/v1/completions', { prompt: 'x', n: 2 });
  assert.equal(logLines.length, 2);
  assert.match(logLines[0], /^\S+Z POST \/v1\/completions 200 4\+3 tokens \d+ ms$/);
  assert.match(logLines[1], /POST \/v1\/completions 400 \d+ ms \(n other than 1/);
});

/** Count the model's forward calls (one per generation step of a batch) while `body` runs. */
async function countingSteps<T>(body: () => Promise<T>): Promise<{ value: T; steps: number }> {
  const forward = model.forward;
  let steps = 0;
  model.forward = function (...args: Parameters<typeof forward>) { steps++; return forward.apply(this, args); };
  try {
    const value = await body();
    await server.queue.idle();
    return { value, steps };
  } finally {
    model.forward = forward;
  }
}

test('a client that disconnects mid-stream stops its generation', async () => {
  logLines.length = 0;
  const maxTokens = 200;
  // Greedy, and known to run all 200 steps when left alone (no EOS), so a short run means the abort worked.
  assert.equal((await greedy(tokenizer.encode(prompt), { maxNewTokens: maxTokens })).ids.length, maxTokens);
  const { steps } = await countingSteps(() => new Promise<void>((resolve, reject) => {
    const req = httpRequest(url + '/v1/completions', { method: 'POST' }, (res) => {
      res.once('data', () => { req.destroy(); setTimeout(resolve, 50); });
    });
    req.on('error', () => {});
    req.end(JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0, stream: true }));
    setTimeout(() => reject(new Error('no data streamed')), 10_000).unref();
  }));
  await server.queue.idle();
  assert.ok(steps < maxTokens / 2, `generation ran ${steps} of ${maxTokens} steps after the client left`);
  assert.match(logLines.join('\n'), /POST \/v1\/completions 499 \d+ ms \(client closed the connection\)/);
});

test('requests that arrive together and share settings run as one batch, with the same answers', async () => {
  const texts = ['The quick brown fox', 'Once upon a time', 'def main():'];
  const alone = await Promise.all(texts.map((t) => greedy(tokenizer.encode(t), { maxNewTokens: 10 })));
  const { value, steps } = await countingSteps(() =>
    Promise.all(texts.map((t) => post('/v1/completions', { prompt: t, max_tokens: 10, temperature: 0 }))));
  assert.deepEqual(value.map((r) => r.json.choices[0].text), alone.map((a) => a.text));
  // The first runs alone (the model was free); the other two wait and then share one run.
  assert.ok(steps <= 20, `${steps} steps for three 10-token requests: expected two runs`);
  // Seeded sampling never shares a batch, so the same seed gives the same text side by side.
  const seeded = await Promise.all([1, 2].map(() => post('/v1/completions', { prompt, max_tokens: 10, temperature: 1, seed: 42 })));
  assert.equal(seeded[0].json.choices[0].text, seeded[1].json.choices[0].text);
});

test('in a shared run, a request whose rows have ended is answered before the run ends', async () => {
  const [a, b] = ['Once upon a time', 'def main():'];
  const aloneA = await greedy(tokenizer.encode(a), { maxNewTokens: 30 }), aloneB = await greedy(tokenizer.encode(b), { maxNewTokens: 30 });
  const stop = [5, 6, 7, 8, 9, 10].map((k) => aloneA.text.slice(k, k + 4)).find((x) => x.trim().length > 0 && !aloneB.text.includes(x));
  assert.ok(stop, 'no usable stop string in the fixture text');
  const answered: { which: string; steps: number }[] = [];
  let stepsNow = () => 0;
  const { steps } = await countingSteps(async () => {
    const forward = model.forward;
    let n = 0;
    model.forward = function (...args: Parameters<typeof forward>) { n++; return forward.apply(this, args); };
    stepsNow = () => n;
    try {
      const blocker = post('/v1/completions', { prompt, max_tokens: 4, temperature: 0 }); // runs alone; a and b then share a run
      const ask = (which: string, text: string) => post('/v1/completions', { prompt: text, max_tokens: 30, temperature: 0, stop: [stop] })
        .then((r) => { answered.push({ which, steps: stepsNow() }); return r; });
      const [ra, rb] = await Promise.all([ask('a', a), ask('b', b), blocker]);
      assert.equal(ra.json.choices[0].finish_reason, 'stop');
      assert.equal(rb.json.choices[0].finish_reason, 'length');
      assert.equal(rb.json.choices[0].text, aloneB.text.slice(0, rb.json.choices[0].text.length));
    } finally {
      model.forward = forward;
    }
  });
  assert.deepEqual(answered.map((x) => x.which), ['a', 'b']);
  assert.ok(answered[0].steps < answered[1].steps, `a answered after ${answered[0].steps} steps, b after ${answered[1].steps}`);
  assert.ok(steps <= 4 + 30, `${steps} steps: a and b should have shared one run`);
});

test('with an API key, /v1 needs the Bearer token; /health does not; CORS only when allowed', async () => {
  assert.equal((await fetch(url + '/v1/models')).headers.get('access-control-allow-origin'), null);
  const locked = new MptServer({ model, tokenizer, modelId: 'tiny', apiKey: 'sesame', allowOrigin: 'https://app.example', log: () => {} });
  const base = await locked.listen(0);
  try {
    const none = await fetch(base + '/v1/models');
    assert.equal(none.status, 401);
    assert.equal(((await none.json()) as any).error.code, 'invalid_api_key');
    assert.equal((await fetch(base + '/v1/models', { headers: { Authorization: 'Bearer wrong' } })).status, 401);
    assert.equal((await fetch(base + '/v1/models', { headers: { Authorization: 'Bearer sesame' } })).status, 200);
    assert.equal((await fetch(base + '/health')).status, 200);
    // A browser's preflight carries no credentials; the answer to the real request carries the origin, errors too.
    const preflight = await fetch(base + '/v1/chat/completions', { method: 'OPTIONS' });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get('access-control-allow-methods'), 'POST, OPTIONS');
    assert.match(preflight.headers.get('access-control-allow-headers') ?? '', /Authorization/);
    assert.equal(none.headers.get('access-control-allow-origin'), 'https://app.example');
  } finally {
    await locked.close();
  }
});

test('a model folder\'s own chat_template is detected (to say it is not used)', () => {
  assert.equal(hasOwnChatTemplate(dir), false);
  const withTemplate = mkdtempSync(join(tmpdir(), 'mpt-serve-'));
  writeFileSync(join(withTemplate, 'tokenizer_config.json'), JSON.stringify({ chat_template: '{% for m in messages %}{{ m.content }}{% endfor %}' }));
  assert.equal(hasOwnChatTemplate(withTemplate), true);
});

test('close() lets a running stream finish, then stops listening', async () => {
  const closing = new MptServer({ model, tokenizer, modelId: 'tiny', log: () => {} });
  const base = await closing.listen(0);
  const res = await fetch(base + '/v1/completions', { method: 'POST', body: JSON.stringify({ prompt, max_tokens: 40, temperature: 0, stream: true }) });
  const closed = closing.close();
  const text = await res.text();
  assert.match(text, /"finish_reason":"length"[^]*data: \[DONE\]\n\n$/);
  await closed;
  await assert.rejects(fetch(base + '/health'));
});

test('mpt serve --help; mpt serve prints its URL, serves, and exits 0 on SIGTERM', async () => {
  const mpt = join(projectRoot, 'bin', 'mpt.js');
  const help = spawnSync(process.execPath, [mpt, 'serve', '--help'], { encoding: 'utf8' });
  assert.equal(help.status, 0);
  assert.match(help.stdout, /--api-key KEY/);
  assert.match(help.stdout, /POST \/v1\/chat\/completions/);
  const child = spawn(process.execPath, [mpt, 'serve', '--model', dir, '--device', 'cpu', '--port', '0', '--served-model-name', 'tiny-cli'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const base = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = /serving tiny-cli .* at (http:\/\/\S+)\/v1/.exec(out);
      if (m) resolve(m[1]);
    });
    child.on('exit', () => reject(new Error(`mpt serve exited: ${stderr}`)));
  });
  const r = await fetch(base + '/v1/completions', { method: 'POST', body: JSON.stringify({ model: 'tiny-cli', prompt, max_tokens: 12, temperature: 0 }) });
  assert.equal(((await r.json()) as any).choices[0].text, (await greedy(tokenizer.encode(prompt))).text);
  child.kill('SIGTERM');
  assert.equal(await exited, 0);
  assert.match(stderr, /POST \/v1\/completions 200/);
});

/** log-softmax of the model's logits at every position of `ids`, in float64, from one plain forward (no padding). */
function logSoftmaxAt(ids: number[]): (position: number) => Float64Array {
  const cache = model.newCache(1, ids.length);
  const logits = model.backend.download(model.forward(Int32Array.from(ids), cache, { logits: 'all', attentionMask: null })) as Float32Array;
  cache.release();
  const vocab = model.config.vocabSize;
  return (p) => {
    const row = Float64Array.from(logits.subarray(p * vocab, (p + 1) * vocab));
    const max = Math.max(...row);
    const logSum = Math.log(row.reduce((sum, v) => sum + Math.exp(v - max), 0));
    return row.map((v) => v - max - logSum);
  };
}

/** The k largest values of a row, largest first. */
const largest = (row: Float64Array, k: number) => [...row].sort((a, b) => b - a).slice(0, k);

/** `ids[j]`'s logprob and top map (k best) in a completions logprobs object agree with the forward pass at position j - 1. */
function assertScored(lp: any, i: number, ids: number[], j: number, k: number, at: (p: number) => Float64Array) {
  const row = at(j - 1);
  assert.ok(Math.abs(lp.token_logprobs[i] - row[ids[j]]) < 1e-6, `token ${i}: ${lp.token_logprobs[i]} vs ${row[ids[j]]}`);
  const values = Object.values(lp.top_logprobs[i]) as number[];
  const best = largest(row, k);
  // The k best, plus the token itself when it is not among them (keys are token texts, which may repeat).
  assert.ok(values.length <= k + 1, `${values.length} entries for k = ${k}`);
  const sorted = [...values].sort((a, b) => b - a);
  best.forEach((v, r) => assert.ok(Math.abs(sorted[r] - v) < 1e-6 || values.length < k, `rank ${r}: ${sorted[r]} vs ${v}`));
  assert.ok(values.some((v) => Math.abs(v - row[ids[j]]) < 1e-6), 'the actual token is in top_logprobs');
  if (row[ids[j]] === best[0]) assert.equal(Math.max(...values), lp.token_logprobs[i], 'the argmax token is the top entry');
}

test('echo + logprobs with max_tokens 0 scores the prompt as the model does; batched prompts as each alone', async () => {
  const texts = ['The quick brown fox jumps over the lazy dog', 'naïve café 🦊 ok'];
  const prompts = texts.map((t) => tokenizer.encode(t));
  const k = 3;
  const r = await post('/v1/completions', { prompt: prompts, echo: true, logprobs: k, max_tokens: 0, temperature: 0 });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  assert.deepEqual(r.json.usage, { prompt_tokens: prompts[0].length + prompts[1].length, completion_tokens: 0, total_tokens: prompts[0].length + prompts[1].length });
  r.json.choices.forEach((choice: any, c: number) => {
    const ids = prompts[c];
    const at = logSoftmaxAt(ids);
    assert.equal(choice.text, texts[c]);
    const lp = choice.logprobs;
    assert.deepEqual(Object.keys(lp), ['tokens', 'token_logprobs', 'top_logprobs', 'text_offset']);
    assert.equal(lp.tokens.length, ids.length);
    assert.equal(lp.token_logprobs[0], null);
    assert.equal(lp.top_logprobs[0], null);
    for (let j = 1; j < ids.length; j++) assertScored(lp, j, ids, j, k, at);
    // Offsets: where each token's text starts in the returned text.
    assert.equal(lp.text_offset[0], 0);
    lp.tokens.forEach((token: string, i: number) => {
      if (i > 0) assert.ok(lp.text_offset[i] >= lp.text_offset[i - 1]);
      if (!token.startsWith('bytes:')) assert.equal(choice.text.slice(lp.text_offset[i], lp.text_offset[i] + token.length), token, `token ${i}`);
    });
  });
  // The emoji is split over byte tokens, spelt bytes:\xNN as OpenAI does.
  assert.ok(r.json.choices[1].logprobs.tokens.some((t: string) => /^bytes:(\\x[0-9a-f]{2})+$/.test(t)));
});

test('logprobs of generated tokens are the model\'s (raw logits), whatever the sampling settings', async () => {
  const ids = tokenizer.encode(prompt);
  for (const body of [{ temperature: 0 }, { temperature: 1.7, top_k: 4, seed: 7, repetition_penalty: 1.3 }]) {
    const r = await post('/v1/completions', { prompt, max_tokens: 6, logprobs: 2, return_token_ids: true, ...body });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const [choice] = r.json.choices;
    const all = [...ids, ...choice.token_ids];
    const at = logSoftmaxAt(all);
    const lp = choice.logprobs;
    assert.equal(lp.tokens.length, choice.token_ids.length);
    choice.token_ids.forEach((_: number, i: number) => assertScored(lp, i, all, ids.length + i, 2, at));
    assert.equal(lp.text_offset[0], 0);
    lp.tokens.forEach((token: string, i: number) => {
      if (!token.startsWith('bytes:')) assert.equal(choice.text.slice(lp.text_offset[i], lp.text_offset[i] + token.length), token);
    });
  }
});

test('lm-eval-harness loglikelihood: echo, logprobs 1, max_tokens 1 on token ids; context + continuation scored', async () => {
  const context = tokenizer.encode('The quick brown'), continuation = tokenizer.encode(' fox jumps');
  const ids = [...context, ...continuation];
  const r = await post('/v1/completions', { model: 'tiny', prompt: [ids], temperature: 0, max_tokens: 1, logprobs: 1, seed: 1234, echo: true });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const lp = r.json.choices[0].logprobs;
  assert.equal(lp.token_logprobs.length, ids.length + 1); // the prompt and the one generated token
  assert.equal(r.json.choices[0].text.slice(0, tokenizer.decode(ids).length), tokenizer.decode(ids));
  // What the harness computes: the continuation's log-likelihood and whether greedy decoding gives it.
  const scored = lp.token_logprobs.slice(context.length, -1) as number[];
  const tops = lp.top_logprobs.slice(context.length, -1) as Record<string, number>[];
  const at = logSoftmaxAt(ids);
  const expected = continuation.reduce((sum, id, i) => sum + at(context.length + i - 1)[id], 0);
  assert.ok(Math.abs(scored.reduce((a, b) => a + b, 0) - expected) < 1e-6);
  const greedy = continuation.every((id, i) => { const row = at(context.length + i - 1); return row[id] === Math.max(...row); });
  assert.equal(scored.every((v, i) => v === Math.max(...Object.values(tops[i]))), greedy);
});

test('chat logprobs: each generated token with its bytes and exactly top_logprobs alternatives', async () => {
  const messages = [{ role: 'user', content: 'Name a fox.' }];
  const r = await post('/v1/chat/completions', { messages, max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 2, return_token_ids: true });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const [choice] = r.json.choices;
  const ids = tokenizer.encode(renderChat(messages as any));
  const at = logSoftmaxAt([...ids, ...choice.token_ids]);
  const content = choice.logprobs.content;
  assert.equal(content.length, r.json.usage.completion_tokens);
  content.forEach((t: any, i: number) => {
    const row = at(ids.length + i - 1);
    const id = choice.token_ids[i];
    assert.deepEqual(t.bytes, [...tokenizer.tokenBytes(id)]);
    assert.ok(Math.abs(t.logprob - row[id]) < 1e-6);
    assert.equal(t.top_logprobs.length, 2);
    largest(row, 2).forEach((v, r) => assert.ok(Math.abs(t.top_logprobs[r].logprob - v) < 1e-6));
    assert.equal(t.top_logprobs[0].token, t.token, 'greedy: the chosen token is the best');
  });
  // Without logprobs the field stays null.
  const plain = await post('/v1/chat/completions', { messages, max_tokens: 2, temperature: 0, logprobs: false });
  assert.equal(plain.json.choices[0].logprobs, null);
});

test('bad logprobs / echo requests are refused by name', async () => {
  assertError(await post('/v1/completions', { prompt: 'x', logprobs: -1 }), 400, 'logprobs', /≥ 0/);
  assertError(await post('/v1/completions', { prompt: 'x', logprobs: 21 }), 400, 'logprobs', /≤ 20/);
  assertError(await post('/v1/completions', { prompt: 'x', logprobs: 1.5 }), 400, 'logprobs', /integer/);
  assertError(await post('/v1/completions', { prompt: 'x', logprobs: true }), 400, 'logprobs', /must be a number/);
  assertError(await post('/v1/completions', { prompt: 'x', echo: 'yes' }), 400, 'echo', /true or false/);
  assertError(await post('/v1/completions', { prompt: 'x', max_tokens: 0 }), 400, 'max_tokens', /0 is allowed only with echo/);
  assertError(await post('/v1/completions', { prompt: 'x', logprobs: 1, stream: true }), 400, 'logprobs', /logprobs with stream is not supported/);
  assertError(await post('/v1/completions', { prompt: 'x', echo: true, stream: true }), 400, 'echo', /echo with stream is not supported/);
  const chat = { messages: [{ role: 'user', content: 'x' }] };
  assertError(await post('/v1/chat/completions', { ...chat, echo: true }), 400, 'echo', /unrecognized/);
  assertError(await post('/v1/chat/completions', { ...chat, top_logprobs: 2 }), 400, 'top_logprobs', /needs logprobs: true/);
  assertError(await post('/v1/chat/completions', { ...chat, logprobs: true, top_logprobs: 21 }), 400, 'top_logprobs', /≤ 20/);
  assertError(await post('/v1/chat/completions', { ...chat, logprobs: 1 }), 400, 'logprobs', /true or false/);
  assertError(await post('/v1/chat/completions', { ...chat, logprobs: true, stream: true }), 400, 'logprobs', /with stream is not supported/);
  assertError(await post('/v1/chat/completions', { ...chat, max_tokens: 0 }), 400, 'max_tokens', /≥ 1/);
  // Echo alone returns the prompt before the completion; a full-context prompt can still be scored.
  const echoed = await post('/v1/completions', { prompt, echo: true, max_tokens: 3, temperature: 0 });
  assert.equal(echoed.json.choices[0].text, prompt + (await greedy(tokenizer.encode(prompt), { maxNewTokens: 3 })).text);
  assert.equal(echoed.json.choices[0].logprobs, null);
  const full = await post('/v1/completions', { prompt: new Array(256).fill(510), echo: true, logprobs: 0, max_tokens: 0 });
  assert.equal(full.status, 200, JSON.stringify(full.json));
  assert.equal(full.json.choices[0].logprobs.tokens.length, 256);
});

test('logprobs take the host path even where the backend has a fused decoder (it never hands back logits)', async () => {
  let asked = 0;
  const backend = Object.create(model.backend, { createDecoder: { value: () => { asked++; throw new Error('the fused decoder was used'); } } });
  const withDecoder = Object.create(model, { backend: { value: backend } });
  const ids = tokenizer.encode(prompt);
  const [r] = await generate(withDecoder, tokenizer, [ids], { maxNewTokens: 4, temperature: 0, eosId: null, logprobs: 1 });
  assert.equal(asked, 0);
  assert.equal(r.logprobs?.length, 4);
  assert.deepEqual(r.ids, (await greedy(ids, { maxNewTokens: 4, eosId: null })).ids);
  await assert.rejects(generate(withDecoder, tokenizer, [ids], { maxNewTokens: 4, temperature: 0, eosId: null }), /fused decoder was used/);
});

test('echo + logprobs requests that arrive together share one run and get what each gets alone', async () => {
  const texts = ['Once upon a time', 'def main():\n    print(1)'];
  const body = (t: string) => ({ prompt: t, echo: true, logprobs: 2, max_tokens: 1, temperature: 0 });
  const alone: any[] = [];
  for (const t of texts) alone.push((await post('/v1/completions', body(t))).json.choices[0]);
  const { value, steps } = await countingSteps(() => Promise.all([
    post('/v1/completions', { prompt, max_tokens: 3, temperature: 0 }), // runs alone; the two below then share a run
    ...texts.map((t) => post('/v1/completions', body(t))),
  ]));
  value.slice(1).forEach((r, i) => {
    const [got, want] = [r.json.choices[0], alone[i]];
    assert.equal(got.text, want.text);
    assert.deepEqual(got.logprobs.tokens, want.logprobs.tokens);
    assert.deepEqual(got.logprobs.text_offset, want.logprobs.text_offset);
    assert.deepEqual(got.logprobs.token_logprobs, want.logprobs.token_logprobs);
    assert.deepEqual(got.logprobs.top_logprobs, want.logprobs.top_logprobs);
  });
  // 3 steps for the first; one scoring pass and one generation step for the shared run.
  assert.equal(steps, 3 + 2);
});

test('response JSON: top_logprobs maps keep their best-first order, integer-like keys too; the rest as JSON.stringify', () => {
  const top = new OrderedMap([[' the', -0.5], ['1', -1.25], ['bytes:\\xe2', -2], ['0', -3]]);
  assert.equal(toJson({ top_logprobs: [null, top] }), '{"top_logprobs":[null,{" the":-0.5,"1":-1.25,"bytes:\\\\xe2":-2,"0":-3}]}');
  const plain = { a: 1, b: [1, undefined, null, 'x\u2028"é', NaN, { c: undefined, d: -0, e: 1e-300 }], f: undefined, error: { toJSON: () => ({ message: 'm' }) }, 7: true };
  assert.equal(toJson(plain), JSON.stringify(plain));
});
