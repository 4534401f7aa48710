// Sampling and generation: the options behave as documented, on the tiny fixture model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generate, type GenerateOptions } from '../src/generate/generate.js';
import { argmax, sampleToken, topLogits } from '../src/generate/sampling.js';
import { StopWatcher } from '../src/generate/stop.js';
import { Tokenizer } from '../src/tokenizer/index.js';
import { Rng } from '../src/util/random.js';
import { fixture } from './fixtures.js';
import { fixtureModel } from './fixture-model.js';

const dir = fixture('mosaic-gpt-tiny');
const model = await fixtureModel('mosaic-gpt-tiny');
const tokenizer = Tokenizer.fromFolder(dir);
const prompt = tokenizer.encode('The quick brown fox');
const base: GenerateOptions = { maxNewTokens: 12, temperature: 0.9, topP: 0.95, eosId: tokenizer.eosId };

test('the same seed gives the same text; another seed gives another', async () => {
  const [a] = await generate(model, tokenizer, [prompt], { ...base, seed: 1 });
  const [b] = await generate(model, tokenizer, [prompt], { ...base, seed: 1 });
  const [c] = await generate(model, tokenizer, [prompt], { ...base, seed: 2 });
  assert.deepEqual(a.ids, b.ids);
  assert.notDeepEqual(a.ids, c.ids);
  assert.equal(a.text, tokenizer.decode(a.ids));
});

test('temperature 0 and top-k 1 are both greedy', async () => {
  const [greedy] = await generate(model, tokenizer, [prompt], { ...base, temperature: 0 });
  const [topOne] = await generate(model, tokenizer, [prompt], { ...base, topK: 1, seed: 5 });
  assert.deepEqual(greedy.ids, topOne.ids);
  assert.equal(greedy.ids.length, 12);
  assert.equal(greedy.finishReason, 'length');
});

test('several prompts at once give what each gives alone (left padding)', async () => {
  const other = tokenizer.encode('def fib(n):\n    return');
  const both = await generate(model, tokenizer, [prompt, other], { ...base, temperature: 0 });
  const [alone] = await generate(model, tokenizer, [other], { ...base, temperature: 0 });
  assert.deepEqual(both[1].ids, alone.ids);
});

test('streaming delivers exactly the final text, piece by piece', async () => {
  const pieces: string[] = [];
  const [r] = await generate(model, tokenizer, [prompt], { ...base, seed: 9, onText: (_, t) => pieces.push(t) });
  assert.ok(pieces.length > 1);
  assert.equal(pieces.join(''), r.text);
});

test('a stop string ends the text just before it; EOS ends a row', async () => {
  const [free] = await generate(model, tokenizer, [prompt], { ...base, temperature: 0 });
  const stop = tokenizer.decode(free.ids.slice(3, 5));
  const [stopped] = await generate(model, tokenizer, [prompt], { ...base, temperature: 0, stop: [stop] });
  assert.equal(stopped.finishReason, 'stop');
  assert.equal(stopped.text, free.text.slice(0, free.text.indexOf(stop)));
  // Treat the 4th greedy token as EOS: generation must end there, without it.
  const [eos] = await generate(model, tokenizer, [prompt], { ...base, temperature: 0, eosId: free.ids[3] });
  assert.equal(eos.finishReason, 'eos');
  assert.deepEqual(eos.ids, free.ids.slice(0, free.ids.indexOf(free.ids[3])));
});

test('a prompt longer than max_seq_len is refused unless ALiBi is asked to go further', async () => {
  const long = new Array(model.config.maxSeqLen + 1).fill(510);
  await assert.rejects(generate(model, tokenizer, [long], base), /max_seq_len is 256.*--allow-long/);
  const warnings: string[] = [];
  const [r] = await generate(model, tokenizer, [long], { ...base, maxNewTokens: 2, temperature: 0, allowBeyondMaxSeqLen: true, onWarning: (m) => warnings.push(m) });
  assert.equal(r.ids.length, 2);
  assert.match(warnings.join(), /past max_seq_len/);
});

test('sampling: top-k and top-p keep only the best tokens; repetition penalty works as in HF', () => {
  const logits = Float32Array.from([1, 5, 3, 4, 2]);
  const rng = new Rng(3);
  const draws = new Set(Array.from({ length: 300 }, () => sampleToken(logits, { temperature: 1, topK: 2 }, rng)));
  assert.deepEqual([...draws].sort(), [1, 3]);
  // softmax([5,4,3,2,1]) = .64,.24,.09,…: top-p 0.7 keeps the two best (0.64 < 0.7 ≤ 0.88).
  const nucleus = new Set(Array.from({ length: 300 }, () => sampleToken(logits, { temperature: 1, topP: 0.7 }, rng)));
  assert.deepEqual([...nucleus].sort(), [1, 3]);
  // Penalty 10 divides the positive logit of token 1 (5 → 0.5): token 3 becomes the best.
  assert.equal(sampleToken(logits, { temperature: 0, repetitionPenalty: 10 }, rng, [1]), 3);
  assert.equal(argmax(logits), 1);
  assert.deepEqual(topLogits(logits, 3), [[1, 5], [3, 4], [2, 3]]);
});

test('top-p on a large vocabulary draws exactly from the nucleus a full sort gives', () => {
  const rng = new Rng(11);
  const logits = Float32Array.from({ length: 5000 }, () => rng.normal() * 4);
  const temperature = 0.7, topP = 0.5;
  // The reference: sort everything, keep the shortest best-first prefix reaching half the mass.
  const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
  const w = order.map((id) => Math.exp((logits[id] - logits[order[0]]) / temperature));
  const total = w.reduce((a, b) => a + b, 0);
  const nucleus = new Set<number>();
  for (let i = 0, mass = 0; mass < topP * total; mass += w[i++]) nucleus.add(order[i]);
  const drawn = new Set(Array.from({ length: 4000 }, () => sampleToken(logits, { temperature, topP }, rng)));
  for (const id of drawn) assert.ok(nucleus.has(id), `token ${id} is outside the nucleus`);
  assert.ok(nucleus.size > 1 && nucleus.size < 60, `a nucleus of ${nucleus.size} tokens`);
  assert.deepEqual([...drawn].sort((a, b) => a - b), [...nucleus].sort((a, b) => a - b), 'every nucleus member is drawn');
});

test('stop strings are held back until they can no longer match', () => {
  const w = new StopWatcher(['END']);
  assert.equal(w.push('abc E'), 'abc ');
  assert.equal(w.push('N'), '');
  assert.equal(w.push('X'), 'ENX');
  assert.equal(w.push(' then END more'), ' then ');
  assert.equal(w.stopped, true);
});

test('a backend\'s fused decoder is used when it runs the model; refusal falls back, a failure does not', async () => {
  const { CpuBackend } = await import('../src/backend/cpu/index.js');
  const { DecoderUnsupported } = await import('../src/backend/backend.js');
  const { openModelFolder } = await import('../src/io/model-folder.js');
  const { loadModel } = await import('../src/model/load.js');
  let mode: 'decoder' | 'refuse' | 'fail' = 'decoder';
  // A decoder that always picks token 7: generation's tokens show which path ran.
  class WithDecoder extends CpuBackend {
    createDecoder(_c: unknown, _p: unknown, _s: unknown, batch: number) {
      if (mode === 'refuse') throw new DecoderUnsupported('not this model');
      if (mode === 'fail') throw new Error('out of device memory');
      const sevens = () => new Int32Array(batch).fill(7);
      return { prefill: sevens, step: sevens, release: () => {} };
    }
  }
  const folder = await openModelFolder(fixture('mosaic-gpt-tiny'));
  const probe = await loadModel(folder, new WithDecoder());
  await folder.close();
  const greedy = { ...base, temperature: 0, maxNewTokens: 5 };
  const [fused] = await generate(probe, tokenizer, [prompt], greedy);
  assert.deepEqual(fused.ids, [7, 7, 7, 7, 7]);
  mode = 'refuse';
  const [fallback] = await generate(probe, tokenizer, [prompt], greedy);
  const [generic] = await generate(model, tokenizer, [prompt], greedy);
  assert.deepEqual(fallback.ids, generic.ids);
  mode = 'fail';
  await assert.rejects(generate(probe, tokenizer, [prompt], greedy), /out of device memory/);
});

test('onRowDone reports each row once, as soon as it ends, with the result generate returns', async () => {
  const greedyOf = (p: number[], stop?: string[]) => generate(model, tokenizer, [p], { maxNewTokens: 30, temperature: 0, eosId: null, stop }).then((r) => r[0]);
  const a = tokenizer.encode('Once upon a time'), b = tokenizer.encode('def main():');
  const aloneA = await greedyOf(a), aloneB = await greedyOf(b);
  // A stop string that A's text reaches early and B's never does.
  const stop = [5, 6, 7, 8, 9, 10].map((k) => aloneA.text.slice(k, k + 4)).find((s) => s.trim().length > 0 && !aloneB.text.includes(s));
  assert.ok(stop, 'no usable stop string in the fixture text');
  let steps = 0;
  const forward = model.forward;
  model.forward = function (...args: Parameters<typeof forward>) { steps++; return forward.apply(this, args); };
  const seen: { row: number; steps: number; result: unknown }[] = [];
  try {
    const results = await generate(model, tokenizer, [a, b], {
      maxNewTokens: 30, temperature: 0, eosId: null, stop: [stop], onRowDone: (row, result) => seen.push({ row, steps, result }),
    });
    assert.deepEqual(seen.map((s) => s.row), [0, 1]);
    assert.equal(seen[0].result, results[0]);
    assert.equal(seen[1].result, results[1]);
    assert.equal(results[0].finishReason, 'stop');
    assert.equal(results[1].finishReason, 'length');
    assert.ok(seen[0].steps < seen[1].steps, `row 0 ended at step ${seen[0].steps}, reported before the run's end (${seen[1].steps})`);
    assert.equal(results[0].text, (await greedyOf(a, [stop])).text);
  } finally {
    model.forward = forward;
  }
});
