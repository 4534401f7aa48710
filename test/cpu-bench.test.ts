import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { asCpu } from '../src/backend/cpu/tensor.js';
import { benchInference } from '../src/bench/cpu-bench.js';
import { randomBf16Model } from '../src/bench/cpu-random-model.js';
import { openModelFolder } from '../src/io/model-folder.js';
import { MPT_1B_REDPAJAMA_200B, type MptConfig } from '../src/model/config.js';
import { loadModel } from '../src/model/load.js';
import { bfloat16BitsToFloat32 } from '../src/util/dtype.js';
import { fixture } from './fixtures.js';

const backend = new CpuBackend({ threads: 2 });

test('benchInference on the tiny fixture decodes the reference greedy tokens and reports sane figures', async () => {
  const reference = JSON.parse(readFileSync(fixture('mosaic-gpt-tiny', 'reference.json'), 'utf8'));
  const folder = await openModelFolder(fixture('mosaic-gpt-tiny'));
  const model = await loadModel(folder, backend).finally(() => folder.close());
  const prompt = Int32Array.from(reference.prompt_ids as number[]);
  const r = await benchInference(model, { promptTokens: prompt.length, newTokens: 10, batch: 1, prompt });
  assert.deepEqual(r.tokens, reference.greedy_24_with_cache.slice(0, 10));
  for (const v of [r.prefillSeconds, r.prefillTokensPerSecond, r.decodeSeconds, r.decodeTokensPerSecond]) assert.ok(Number.isFinite(v) && v > 0);
  assert.ok(Math.abs(r.decodeTokensPerSecond - 9 / r.decodeSeconds) < 1e-6 * r.decodeTokensPerSecond, '9 decode steps after the prefill');
  assert.ok(r.decodeStepMs.min <= r.decodeStepMs.median && r.decodeStepMs.median <= r.decodeStepMs.max);
  assert.ok(r.peakRssBytes >= process.memoryUsage.rss() * 0.5 && r.peakRssBytes < 64 * 2 ** 30);
});

test('benchInference runs a batch and refuses impossible options', async () => {
  const model = randomBf16Model(smallConfig(), backend, { seed: 3 });
  const r = await benchInference(model, { promptTokens: 5, newTokens: 3, batch: 2 });
  assert.equal(r.tokens.length, 3);
  assert.ok(r.tokens.every((t) => Number.isInteger(t) && t >= 0 && t < 300));
  await assert.rejects(benchInference(model, { promptTokens: 60, newTokens: 10, batch: 1 }), /exceed the model's 64 positions/);
  await assert.rejects(benchInference(model, { promptTokens: 4, newTokens: 1, batch: 1 }), /newTokens ≥ 2/);
});

function smallConfig(): MptConfig {
  return { ...MPT_1B_REDPAJAMA_200B, dModel: 48, nHeads: 4, nLayers: 2, vocabSize: 300, maxSeqLen: 64 };
}

test('randomBf16Model: bf16 weights on the wasm heap, LayerNorms 1, matrices N(0, 0.02²), reproducible by seed', () => {
  const config = smallConfig();
  const model = randomBf16Model(config, backend, { seed: 7 });
  const again = randomBf16Model(config, backend, { seed: 7 });
  const other = randomBf16Model(config, backend, { seed: 8 });
  const bits = (t: unknown) => asCpu(t as never).data as Uint16Array;
  const { blocks, wte } = model.params;
  for (const t of [wte, blocks[0].wqkv.weight, blocks[1].down.weight, blocks[0].ln1.weight, model.params.lnF.weight]) {
    assert.equal(t.dtype, 'bfloat16');
    assert.ok(backend.onHeap(t));
  }
  assert.ok([...bits(blocks[1].qLn!.weight)].every((b) => bfloat16BitsToFloat32(b) === 1));
  const values = [...bits(wte), ...bits(blocks[0].up.weight)].map(bfloat16BitsToFloat32);
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const std = Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length);
  assert.ok(Math.abs(mean) < 0.001 && Math.abs(std - 0.02) < 0.001, `mean ${mean}, std ${std}`);
  assert.deepEqual(bits(again.params.blocks[1].down.weight), bits(blocks[1].down.weight));
  assert.notDeepEqual(bits(other.params.blocks[1].down.weight), bits(blocks[1].down.weight));
});
