import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuBackend } from '../src/backend/cpu/index.js';
import { openModelFolder } from '../src/io/model-folder.js';
import { loadModel, modelFromTensors } from '../src/model/load.js';
import type { MptConfig } from '../src/model/config.js';
import { loadCheckpoint, latestCheckpoint } from '../src/train/checkpoint.js';
import { exportCheckpoint } from '../src/train/export.js';
import { trainFromYaml } from '../src/train/from-yaml.js';
import { float32ToBfloat16Array } from '../src/util/dtype.js';
import { fixture, projectRoot } from './fixtures.js';
import { hubCacheWith } from './hub-cache.js';

/** A tiny model trained for a batch or two on the CPU, saved in `saveFolder`, its run naming `tokenizer`. */
async function trainTiny(saveFolder: string, backend: CpuBackend, batches: number, tokenizer: string): Promise<string> {
  await trainFromYaml(join(projectRoot, 'yamls', 'tiny-cpu.yaml'), [
    `save_folder=${saveFolder}`, `max_duration=${batches}ba`, 'global_train_batch_size=2', 'device_train_microbatch_size=2', 'max_seq_len=32',
    'eval_interval=100ba', `tokenizer.name=${tokenizer}`,
  ], { backend, log: () => {} });
  return saveFolder;
}

test('mpt export writes a folder that loads back with identical weights and logits', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mpt-export-'));
  try {
    const backend = new CpuBackend({ threads: 2 });
    const saveFolder = await trainTiny(join(dir, 'run'), backend, 2, fixture('mosaic-gpt-tiny'));
    const out = join(dir, 'hf');
    const r = await exportCheckpoint(saveFolder, out);
    assert.equal(r.format, 'mosaic_gpt');
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) {
      assert.ok(existsSync(join(out, f)), `${f} is written`);
    }

    const { state, tensors } = await loadCheckpoint(latestCheckpoint(saveFolder)!);
    const folder = await openModelFolder(out);
    assert.equal(folder.format, 'mosaic_gpt');
    assert.deepEqual(folder.config, state.run.config);
    for (const [name, source] of folder.tensors) {
      const bytes = await source.read();
      const expected = tensors.params.get(name)!;
      assert.ok(Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength).equals(bytes), `${name} is stored bit for bit`);
    }
    const exported = await loadModel(folder, backend, { dtype: 'float32' });
    await folder.close();
    const direct = modelFromTensors(state.run.config as MptConfig, backend, new Map([...tensors.params].map(([n, d]) => [n, { data: d, dtype: 'float32' as const }])));
    const ids = Int32Array.from('export me', (ch) => ch.charCodeAt(0));
    const a = backend.download(exported.forward(ids, exported.newCache(1, ids.length)));
    const b = backend.download(direct.forward(ids, direct.newCache(1, ids.length)));
    assert.deepEqual(a, b);

    // bfloat16 export: every weight is the float32 master rounded to nearest even, and the config says so.
    const half = join(dir, 'hf-bf16');
    await exportCheckpoint(saveFolder, half, { dtype: 'bfloat16', tokenizerName: 'EleutherAI/gpt-neox-20b' });
    const bf16 = await openModelFolder(half);
    assert.equal(bf16.weightsDtype, 'bfloat16');
    assert.equal(bf16.rawConfig.torch_dtype, 'bfloat16');
    assert.equal(bf16.rawConfig.tokenizer_name, 'EleutherAI/gpt-neox-20b');
    for (const [name, source] of bf16.tensors) {
      const bits = new Uint16Array(new Uint8Array(await source.read()).buffer);
      const master = tensors.params.get(name)!;
      assert.deepEqual(bits, float32ToBfloat16Array(master), `${name} is the rounded master`);
    }
    await bf16.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('mpt export copies a hub-named tokenizer from the hub cache, and without one still writes the model with a note', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mpt-export-hub-'));
  try {
    const saveFolder = await trainTiny(join(dir, 'run'), new CpuBackend({ threads: 2 }), 1, 'EleutherAI/gpt-neox-20b');
    // A hub cache holding only the tokenizer files (as `files: 'tokenizer'` fetches them).
    const cacheDir = join(dir, 'hub'), files = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];
    hubCacheWith(cacheDir, 'EleutherAI/gpt-neox-20b', files.map((f) => fixture('mosaic-gpt-tiny', f)));

    const out = join(dir, 'hf');
    const r = await exportCheckpoint(saveFolder, out, { hub: { cacheDir, download: false } });
    assert.deepEqual(r.notes, []);
    for (const f of files) assert.ok(readFileSync(join(out, f)).equals(readFileSync(fixture('mosaic-gpt-tiny', f))), `${f} is the cached one`);
    const folder = await openModelFolder(out);
    assert.equal(folder.rawConfig.tokenizer_name, 'EleutherAI/gpt-neox-20b');
    await folder.close();

    // Nothing cached and downloads off: the weights and config are written, the note says why the tokenizer is not.
    const bare = join(dir, 'hf-bare');
    const r2 = await exportCheckpoint(saveFolder, bare, { hub: { cacheDir: join(dir, 'empty'), download: false } });
    assert.ok(existsSync(join(bare, 'model.safetensors')) && existsSync(join(bare, 'config.json')));
    assert.ok(!existsSync(join(bare, 'tokenizer.json')));
    assert.equal(r2.notes.length, 1);
    assert.match(r2.notes[0], /tokenizer's files were not copied: EleutherAI\/gpt-neox-20b: .*downloads are off/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
