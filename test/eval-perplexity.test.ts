// Perplexity: windows, input reading, and the loss against two independent computations: a
// log-softmax written here over `forward` logits, and the trainer's own eval-loss path.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuBackend } from '../src/backend/cpu/index.js';
import type { MptModel } from '../src/model/mpt.js';
import { TrainingGraph } from '../src/model/training-forward.js';
import { lossAndGradients } from '../src/model/backward.js';
import { Tokenizer } from '../src/tokenizer/index.js';
import { evaluatePerplexity, readEvalTokens, slidingWindows } from '../src/eval/index.js';
import { FormatError, UserError } from '../src/util/errors.js';
import { fixture, projectRoot } from './fixtures.js';
import { fixtureModel } from './fixture-model.js';

const tiny = fixture('mosaic-gpt-tiny');
const reference = JSON.parse(readFileSync(join(tiny, 'reference.json'), 'utf8'));
const data = join(projectRoot, 'test', 'data', 'eval');
const backend = new CpuBackend();
const tokenizer = Tokenizer.fromFolder(tiny);
const model = (): Promise<MptModel> => fixtureModel('mosaic-gpt-tiny', backend);

/** −log p(ids[j] | ids[<j]) for j ≥ from, one window alone (batch 1, no padding), log-softmax by hand. */
function windowLossByHand(m: MptModel, ids: Int32Array, from: number): { sum: number; count: number } {
  const vocab = m.config.vocabSize;
  const logits = backend.download(m.forward(ids, m.newCache(1, ids.length))) as Float32Array;
  let sum = 0;
  for (let j = from; j < ids.length; j++) {
    const row = logits.subarray((j - 1) * vocab, j * vocab);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let z = 0;
    for (const v of row) z += Math.exp(v - max);
    sum += -(row[ids[j]!]! - max - Math.log(z));
  }
  return { sum, count: ids.length - from };
}

test('windows: each token is scored at most once; sliding windows score all but the first, non-overlapping ones all but each window\'s first', () => {
  for (const [n, length, stride] of [[100, 16, 16], [100, 16, 5], [17, 16, 16], [16, 16, 1], [3, 16, 8], [64, 8, 8]] as const) {
    const scored = new Array(n).fill(0);
    for (const w of slidingWindows(n, { length, stride })) {
      assert.ok(w.end - w.start <= length && w.scoreFrom > w.start && w.scoreFrom < w.end, JSON.stringify(w));
      for (let i = w.scoreFrom; i < w.end; i++) scored[i]++;
    }
    const expected = scored.map((_, i) => (i === 0 || (stride === length && i % length === 0) ? 0 : 1));
    assert.deepEqual(scored, expected, `n=${n} length=${length} stride=${stride}`);
  }
  // Non-overlapping windows are the packed samples; dropLast leaves out the short remainder.
  assert.deepEqual(slidingWindows(40, { length: 16, dropLast: true }), [{ start: 0, end: 16, scoreFrom: 1 }, { start: 16, end: 32, scoreFrom: 17 }]);
  assert.deepEqual(slidingWindows(40, { length: 16, stride: 8 }).map((w) => w.scoreFrom), [1, 16, 24, 32]);
  assert.throws(() => slidingWindows(40, { length: 16, stride: 17 }), /stride/);
});

test('perplexity of the reference training batch equals the loss the original code computed', async () => {
  const m = await model();
  const ids = Int32Array.from((reference.train.input_ids as number[][]).flat());
  const rowLength = reference.train.input_ids[0].length;
  const result = evaluatePerplexity(m, ids, { windowLength: rowLength, batchSize: 2 });
  assert.equal(result.windows, 2);
  assert.equal(result.tokens, 2 * (rowLength - 1));
  assert.ok(Math.abs(result.meanLoss - reference.train.loss) < 1e-4, `${result.meanLoss} vs the original code's ${reference.train.loss}`);
});

test('perplexity equals a log-softmax computed here, for non-overlapping and sliding windows, batched with padding', async () => {
  const m = await model();
  const input = await readEvalTokens(join(data, 'docs.jsonl'), tokenizer);
  for (const { length, stride, batchSize } of [{ length: 16, stride: 16, batchSize: 3 }, { length: 24, stride: 10, batchSize: 4 }]) {
    const result = evaluatePerplexity(m, input.tokens, { windowLength: length, stride, batchSize, bytes: input.bytes });
    let sum = 0, count = 0;
    for (const w of slidingWindows(input.tokens.length, { length, stride })) {
      const part = windowLossByHand(m, input.tokens.slice(w.start, w.end), w.scoreFrom - w.start);
      sum += part.sum;
      count += part.count;
    }
    assert.equal(result.tokens, count);
    const windowStarts = stride === length ? Math.ceil(input.tokens.length / length) : 1;
    assert.equal(count, input.tokens.length - windowStarts);
    assert.ok(Math.abs(result.meanLoss - sum / count) < 1e-5, `length ${length} stride ${stride}: ${result.meanLoss} vs ${sum / count}`);
    assert.ok(Math.abs(result.perplexity - Math.exp(sum / count)) / result.perplexity < 1e-4);
    assert.ok(Math.abs(result.bitsPerByte! - sum / Math.LN2 / input.bytes!) < 1e-5);
  }
});

test("perplexity agrees with the trainer's eval loss over the same packed samples", async () => {
  const m = await model();
  const input = await readEvalTokens(join(data, 'docs.jsonl'), tokenizer);
  const seqLen = 20, rows = Math.floor(input.tokens.length / seqLen);
  assert.ok(rows >= 2);
  // The trainer's eval: Σ lossSum / Σ count of lossAndGradients over the validation batches.
  const graph = new TrainingGraph(m.config, backend, m.params);
  const samples = input.tokens.slice(0, rows * seqLen);
  const trainer = lossAndGradients(graph, samples, rows, null, 1);
  const ours = evaluatePerplexity(m, input.tokens, { windowLength: seqLen, dropLast: true });
  assert.equal(ours.tokens, trainer.count);
  assert.ok(Math.abs(ours.meanLoss - trainer.lossSum / trainer.count) < 1e-3, `${ours.meanLoss} vs trainer ${trainer.lossSum / trainer.count}`);
  assert.ok(Math.abs(ours.meanLoss - trainer.lossSum / trainer.count) < 1e-5, 'and in fact to float rounding');
});

test('reading: documents then EOS as the packer lays them out, folders in path order, token shards, byte counts', async () => {
  const jsonl = await readEvalTokens(join(data, 'docs.jsonl'), tokenizer);
  const texts = readFileSync(join(data, 'docs.jsonl'), 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l).text as string);
  const expected = texts.flatMap((t) => [...tokenizer.encode(t), tokenizer.eosId]);
  assert.deepEqual(Array.from(jsonl.tokens), expected);
  assert.equal(jsonl.documents, 3);
  assert.equal(jsonl.bytes, texts.reduce((n, t) => n + Buffer.byteLength(t), 0));

  const dir = mkdtempSync(join(tmpdir(), 'mpt-eval-'));
  writeFileSync(join(dir, 'b.txt'), 'second file');
  writeFileSync(join(dir, 'a.txt'), 'first file ✓');
  const shard = Buffer.alloc(8);
  [7, 300, 65535, 0].forEach((id, i) => shard.writeUInt16LE(id, 2 * i));
  writeFileSync(join(dir, 'c.bin'), shard);
  writeFileSync(join(dir, 'ignored.csv'), 'x,y');
  const folder = await readEvalTokens(dir, tokenizer);
  assert.deepEqual(Array.from(folder.tokens), [...tokenizer.encode('first file ✓'), 0, ...tokenizer.encode('second file'), 0, 7, 300, 65535, 0]);
  assert.equal(folder.bytes, null, 'no bits per byte once token shards are in');
  assert.equal(folder.files.length, 3);
});

test('bad input: missing path, malformed JSONL line named by file and line, odd-sized shard, unknown extension', async () => {
  await assert.rejects(readEvalTokens(join(data, 'no-such.jsonl'), tokenizer), (e: Error) => e instanceof UserError && /no-such\.jsonl: no such file or folder/.test(e.message));
  await assert.rejects(readEvalTokens(join(data, 'bad-line.jsonl'), tokenizer), (e: Error) => e instanceof FormatError && /bad-line\.jsonl:2: malformed JSON/.test(e.message));
  const skipped = await readEvalTokens(join(data, 'bad-line.jsonl'), tokenizer, { onBadLine: 'skip' });
  assert.equal(skipped.documents, 1);
  const dir = mkdtempSync(join(tmpdir(), 'mpt-eval-'));
  writeFileSync(join(dir, 'odd.bin'), Buffer.alloc(3));
  await assert.rejects(readEvalTokens(join(dir, 'odd.bin'), tokenizer), /odd\.bin: .*odd count/);
  writeFileSync(join(dir, 'data.csv'), 'a,b');
  await assert.rejects(readEvalTokens(join(dir, 'data.csv'), tokenizer), /data\.csv: not an evaluation input/);
});
