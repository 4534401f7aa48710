// The CPU engine against the reference outputs of the original MosaicGPT code (../shared/fixtures).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { openModelFolder } from '../src/io/model-folder.js';
import { loadModel } from '../src/model/load.js';
import type { MptModel } from '../src/model/mpt.js';
import { argmax, topLogits } from '../src/generate/sampling.js';
import { fixture } from './fixtures.js';

const tiny = fixture('mosaic-gpt-tiny');
const reference = JSON.parse(readFileSync(fixture('mosaic-gpt-tiny', 'reference.json'), 'utf8'));
const referenceBf16 = JSON.parse(readFileSync(fixture('mosaic-gpt-tiny-bf16', 'reference.json'), 'utf8'));
const backend = new CpuBackend();

async function load(dir: string): Promise<MptModel> {
  const folder = await openModelFolder(dir);
  try {
    return await loadModel(folder, backend);
  } finally {
    await folder.close();
  }
}

function logitsOf(model: MptModel, ids: number[]): Float32Array {
  return backend.download(model.forward(Int32Array.from(ids), model.newCache(1, ids.length))) as Float32Array;
}

function assertTop5(actual: Float32Array, expected: [number, number][], tolerance: number, what: string) {
  const got = topLogits(actual, 5);
  assert.deepEqual(got.map(([id]) => id), expected.map(([id]) => id), `${what}: top-5 ids`);
  got.forEach(([, logit], i) => assert.ok(Math.abs(logit - expected[i][1]) <= tolerance, `${what}: logit ${i} ${logit} vs ${expected[i][1]}`));
}

/** Greedy decoding, with the KV cache or by rerunning the whole sequence each step. */
function greedy(model: MptModel, prompt: number[], steps: number, useCache: boolean): number[] {
  const out: number[] = [];
  if (useCache) {
    const cache = model.newCache(1, prompt.length + steps);
    let input = Int32Array.from(prompt);
    for (let s = 0; s < steps; s++) {
      const id = argmax(backend.download(model.forward(input, cache, { logits: 'last' })));
      out.push(id);
      input = Int32Array.of(id);
    }
  } else {
    const ids = [...prompt];
    for (let s = 0; s < steps; s++) {
      const all = logitsOf(model, ids);
      const id = argmax(all.subarray(all.length - model.config.vocabSize));
      out.push(id);
      ids.push(id);
    }
  }
  return out;
}

const expectedLogits = new Float32Array(readFileSync(fixture('mosaic-gpt-tiny', 'reference_logits.f32')).buffer.slice(0));

for (const file of ['pytorch_model.bin', 'model.safetensors']) {
  test(`logits at every position within 1e-4 of the reference, from ${file}`, async () => {
    const folder = await openModelFolder(tiny);
    // Load from one weights file only: the folder prefers safetensors, so hide it for the .bin case.
    const only = file === 'pytorch_model.bin' ? await openBinOnly() : folder;
    const model = await loadModel(only, backend);
    const logits = logitsOf(model, reference.prompt_ids);
    assert.equal(logits.length, expectedLogits.length);
    let worst = 0;
    for (let i = 0; i < logits.length; i++) worst = Math.max(worst, Math.abs(logits[i] - expectedLogits[i]));
    assert.ok(worst <= 1e-4, `max |Δlogit| = ${worst}`);
    const vocab = model.config.vocabSize;
    reference.top5_every_position.forEach((expected: [number, number][], pos: number) =>
      assertTop5(logits.subarray(pos * vocab, (pos + 1) * vocab), expected, 1e-4, `position ${pos}`));
    await folder.close();
    if (only !== folder) await only.close();
  });
}

/** The tiny fixture through its pytorch_model.bin: a temporary folder of links without the safetensors. */
async function openBinOnly() {
  const { mkdtempSync, symlinkSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = mkdtempSync(join(tmpdir(), 'mpt-bin-'));
  for (const name of ['config.json', 'pytorch_model.bin', 'tokenizer.json']) symlinkSync(join(tiny, name), join(dir, name));
  const folder = await openModelFolder(dir);
  assert.ok([...folder.tensors.values()].every((t) => t.file.endsWith('pytorch_model.bin')));
  return folder;
}

test('24 greedy tokens are the reference, with and without the KV cache, for both prompts', async () => {
  const model = await load(tiny);
  assert.deepEqual(greedy(model, reference.prompt_ids, 24, true), reference.greedy_24_with_cache);
  assert.deepEqual(greedy(model, reference.prompt_ids, 24, false), reference.greedy_24_without_cache);
  assert.deepEqual(greedy(model, reference.prompt_b_ids, 24, true), reference.greedy_24_b);
});

test('a left-padded batch gives the reference top-5, and the padded row equals the row alone', async () => {
  const model = await load(tiny);
  const { input_ids: rows, attention_mask: mask, last_logits_top5: expected } = reference.left_padded_batch;
  const t = rows[0].length, vocab = model.config.vocabSize;
  const logits = backend.download(model.forward(Int32Array.from(rows.flat()), model.newCache(2, t), {
    logits: 'last', attentionMask: mask.flat(),
  })) as Float32Array;
  expected.forEach((top5: [number, number][], b: number) => assertTop5(logits.subarray(b * vocab, (b + 1) * vocab), top5, 1e-4, `row ${b}`));
  const alone = logitsOf(model, reference.prompt_b_ids);
  const lastAlone = alone.subarray(alone.length - vocab);
  const padded = logits.subarray(vocab, 2 * vocab);
  let worst = 0;
  for (let i = 0; i < vocab; i++) worst = Math.max(worst, Math.abs(lastAlone[i] - padded[i]));
  assert.ok(worst <= 1e-5, `padded row differs from the row alone by ${worst}`);
});

test('the bfloat16 sharded folder gives its reference top-5 and greedy tokens', async () => {
  const folder = await openModelFolder(fixture('mosaic-gpt-tiny-bf16'));
  assert.equal(folder.weightsDtype, 'bfloat16');
  const model = await loadModel(folder, backend);
  await folder.close();
  const logits = logitsOf(model, referenceBf16.prompt_ids);
  assertTop5(logits.subarray(logits.length - model.config.vocabSize), referenceBf16.last_logits_top5, 1e-4, 'last position');
  assert.deepEqual(greedy(model, referenceBf16.prompt_ids, 24, true), referenceBf16.greedy_24_with_cache);
});
