import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixture } from './fixtures.js';
import { FormatError, UserError, ConfigError } from '../src/util/errors.js';
import { parameterShapes, type MptConfig } from '../src/model/config.js';
import { RangeFile } from '../src/io/file-range.js';
import { readSafetensorsHeader, readSafetensorsTensor, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { readTorchBin, readTorchBinTensor } from '../src/io/torch-bin.js';
import { parseHfConfig } from '../src/io/hf-config.js';
import { canonicalName, mosaicGptName, sourceName } from '../src/io/weight-names.js';
import { checkTensorsAgainst, openModelFolder, type ModelFolder } from '../src/io/model-folder.js';

const tiny = () => fixture('mosaic-gpt-tiny');
const tinyBf16 = () => fixture('mosaic-gpt-tiny-bf16');

async function tempDir(): Promise<string> {
  return fs.mkdtemp(join(tmpdir(), 'mpt-io-'));
}

/** Every tensor of a folder by canonical name → bytes. */
async function readAll(folder: ModelFolder): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const [name, t] of folder.tensors) out.set(name, await t.read());
  return out;
}

/** The fixture's tensors as they are in model.safetensors (MosaicGPT names). */
async function fixtureTensors(): Promise<Array<{ name: string; dtype: 'float32'; shape: number[]; bytes: Buffer }>> {
  const file = await RangeFile.open(join(tiny(), 'model.safetensors'));
  try {
    const header = await readSafetensorsHeader(file);
    const out = [];
    for (const e of header.entries.values()) out.push({ name: e.name, dtype: 'float32' as const, shape: e.shape, bytes: await readSafetensorsTensor(file, e) });
    return out;
  } finally {
    await file.close();
  }
}

async function copyFixtureFolder(from: string, files: string[]): Promise<string> {
  const dir = await tempDir();
  for (const f of files) await fs.copyFile(join(from, f), join(dir, f));
  return dir;
}

async function rejectsWith(promise: Promise<unknown> | (() => unknown), type: Function, pattern: RegExp): Promise<void> {
  await assert.rejects(async () => (typeof promise === 'function' ? promise() : promise), (error: Error) => {
    assert.ok(error instanceof type, `expected ${type.name}, got ${error.name}: ${error.message}`);
    assert.match(error.message, pattern);
    return true;
  });
}

test('pytorch_model.bin and model.safetensors of the tiny fixture give byte-identical tensors', async () => {
  const bin = await RangeFile.open(join(tiny(), 'pytorch_model.bin'));
  const st = await RangeFile.open(join(tiny(), 'model.safetensors'));
  try {
    const { zip, tensors } = await readTorchBin(bin);
    const header = await readSafetensorsHeader(st);
    assert.deepEqual(tensors.map((t) => t.name).sort(), [...header.entries.keys()].sort());
    assert.equal(tensors.length, 18);
    for (const t of tensors) {
      const entry = header.entries.get(t.name)!;
      assert.equal(t.dtype, 'float32');
      assert.deepEqual(t.shape, entry.shape, t.name);
      const a = await readTorchBinTensor(zip, t);
      const b = await readSafetensorsTensor(st, entry);
      assert.equal(a.length, entry.length);
      assert.ok(a.equals(b), `${t.name} differs between the two files`);
    }
  } finally {
    await bin.close();
    await st.close();
  }
});

test('a folder with only pytorch_model.bin loads to the same canonical tensors as model.safetensors', async () => {
  const binOnly = await copyFixtureFolder(tiny(), ['config.json', 'pytorch_model.bin']);
  const a = await openModelFolder(tiny());
  const b = await openModelFolder(binOnly);
  try {
    assert.match(a.tensors.get('wte.weight')!.file, /model\.safetensors$/);
    assert.match(b.tensors.get('wte.weight')!.file, /pytorch_model\.bin$/);
    assert.equal(a.format, 'mosaic_gpt');
    assert.equal(b.weightsDtype, 'float32');
    checkTensorsAgainst(parameterShapes(a.config), a);
    checkTensorsAgainst(parameterShapes(b.config), b);
    const [ta, tb] = [await readAll(a), await readAll(b)];
    assert.deepEqual([...ta.keys()].sort(), [...parameterShapes(a.config).keys()].sort());
    for (const [name, bytes] of ta) assert.ok(bytes.equals(tb.get(name)!), name);
    // Layer-norm weights were moved away from 1 in the fixture: a sanity check that we read values, not padding.
    const ln = new Float32Array(ta.get('blocks.0.ln1.weight')!.buffer.slice(0));
    assert.ok(ln.some((v) => Math.abs(v - 1) > 1e-3));
  } finally {
    await a.close();
    await b.close();
  }
});

/** float32 → bfloat16 bits, round to nearest even (what torch's .to(torch.bfloat16) does). */
function toBf16Bits(bytes: Buffer): Uint16Array {
  const bits = new Uint32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  const out = new Uint16Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = ((bits[i] + 0x7fff + ((bits[i] >>> 16) & 1)) >>> 16) & 0xffff;
  return out;
}

test('the bf16 sharded folder loads through pytorch_model.bin.index.json, and its values are the float32 weights rounded', async () => {
  const bf16 = await openModelFolder(tinyBf16());
  const f32 = await openModelFolder(tiny());
  try {
    assert.equal(bf16.weightsDtype, 'bfloat16');
    const files = new Set([...bf16.tensors.values()].map((t) => t.file.split('/').pop()));
    assert.deepEqual([...files].sort(), ['pytorch_model-00001-of-00002.bin', 'pytorch_model-00002-of-00002.bin']);
    checkTensorsAgainst(parameterShapes(bf16.config), bf16);
    for (const [name, source] of bf16.tensors) {
      const got = await source.read();
      const expected = toBf16Bits(await f32.tensors.get(name)!.read());
      assert.ok(Buffer.from(expected.buffer).equals(got), `${name}: bf16 bytes are not the rounded float32 weights`);
    }
  } finally {
    await bf16.close();
    await f32.close();
  }
});

const MPT_CONFIG = {
  model_type: 'mpt', architectures: ['MPTForCausalLM'], d_model: 64, n_heads: 4, n_layers: 2, expansion_ratio: 4,
  max_seq_len: 256, vocab_size: 50432, learned_pos_emb: true, no_bias: true, logit_scale: null, embedding_fraction: 1.0,
  norm_type: 'low_precision_layernorm', tie_word_embeddings: true,
  attn_config: { attn_type: 'multihead_attention', attn_impl: 'torch', qk_ln: true, clip_qkv: null, softmax_scale: null,
    prefix_lm: false, attn_uses_sequence_id: false, alibi: true, alibi_bias_max: 8, rope: false, kv_n_heads: 1 },
  ffn_config: { ffn_type: 'mptmlp' },
};

/** The tiny fixture rewritten in the MPT format (names, config), with a tied lm_head.weight as some checkpoints carry. */
async function makeMptFolder(config: Record<string, unknown> = MPT_CONFIG): Promise<string> {
  const dir = await tempDir();
  const tensors: TensorToWrite[] = [];
  let wte: Buffer | undefined;
  for (const t of await fixtureTensors()) {
    const canonical = canonicalName('mosaic_gpt', t.name, true)!;
    if (canonical === 'wte.weight') wte = t.bytes;
    tensors.push({ name: sourceName('mpt', canonical), dtype: t.dtype, shape: t.shape, data: () => t.bytes });
  }
  tensors.push({ name: 'lm_head.weight', dtype: 'float32', shape: [50432, 64], data: wte! });
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  await fs.writeFile(join(dir, 'config.json'), JSON.stringify(config));
  return dir;
}

test('an MPT-format folder loads to the same canonical tensors and config as the MosaicGPT fixture', async () => {
  const dir = await makeMptFolder();
  const mpt = await openModelFolder(dir);
  const mosaic = await openModelFolder(tiny());
  try {
    assert.equal(mpt.format, 'mpt');
    assert.ok(mpt.tensors.get('lnF.weight')!.sourceName === 'transformer.norm_f.weight');
    assert.ok(!mpt.tensors.has('lmHead.weight'), 'a tied lm_head.weight is dropped');
    assert.deepEqual({ ...mpt.config, alibiSlopes: 'plain' }, mosaic.config);
    assert.equal(mpt.config.alibiSlopes, 'power-of-two');
    assert.equal(mpt.config.learnedPosEmb, false, 'ALiBi switches learned positions off whatever the file says');
    checkTensorsAgainst(parameterShapes(mpt.config), mpt);
    const [a, b] = [await readAll(mpt), await readAll(mosaic)];
    assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
    for (const [name, bytes] of a) assert.ok(bytes.equals(b.get(name)!), name);
  } finally {
    await mpt.close();
    await mosaic.close();
  }
});

test('writeSafetensors writes an aligned header, leaves no temporary file, and reads back', async () => {
  const dir = await tempDir();
  const path = join(dir, 'out.safetensors');
  const a = Buffer.from(new Float32Array([1, 2, 3, 4, 5, 6]).buffer);
  const b = Buffer.from(new Uint16Array([0x3f80, 0x4000, 0x4040]).buffer);
  await writeSafetensors(path, [
    { name: 'a', dtype: 'float32', shape: [2, 3], data: a },
    { name: 'b', dtype: 'bfloat16', shape: [3], data: async () => b },
    { name: 'empty', dtype: 'float16', shape: [0, 4], data: new Uint8Array(0) },
  ], { note: 'x' });
  assert.deepEqual(await fs.readdir(dir), ['out.safetensors']);
  const file = await RangeFile.open(path);
  try {
    const headerLength = Number((await file.read(0, 8)).readBigUInt64LE(0));
    assert.equal(headerLength % 8, 0);
    const header = await readSafetensorsHeader(file);
    assert.deepEqual(header.metadata, { note: 'x' });
    assert.deepEqual(header.entries.get('a')!.shape, [2, 3]);
    assert.ok((await readSafetensorsTensor(file, header.entries.get('a')!)).equals(a));
    assert.ok((await readSafetensorsTensor(file, header.entries.get('b')!)).equals(b));
    assert.equal(header.entries.get('b')!.dtype, 'bfloat16');
    assert.equal(file.size, 8 + headerLength + a.length + b.length);
  } finally {
    await file.close();
  }
  await assert.rejects(writeSafetensors(path, [{ name: 'bad', dtype: 'float32', shape: [3], data: new Uint8Array(8) }]), /needs 12/);
  assert.deepEqual(await fs.readdir(dir), ['out.safetensors'], 'a failed write leaves the old file and no temporary');
  // A tensor whose values cannot be fetched (a failed download) while the one before is being written.
  const failing = () => { throw new Error('download failed'); };
  await assert.rejects(writeSafetensors(path, [
    { name: 'a', dtype: 'float32', shape: [2, 3], data: a },
    { name: 'c', dtype: 'float32', shape: [3], data: failing },
  ]), /download failed/);
  assert.deepEqual(await fs.readdir(dir), ['out.safetensors'], 'a failed fetch leaves the old file and no temporary');
  const reread = await RangeFile.open(path);
  try {
    assert.deepEqual([...(await readSafetensorsHeader(reread)).entries.keys()], ['a', 'b', 'empty']);
  } finally {
    await reread.close();
  }
});

test('weight names map both ways for both formats', () => {
  const shapes = parameterShapes({ ...(parseHfConfig(MPT_CONFIG).config), noBias: false, alibi: false, learnedPosEmb: true, tieWordEmbeddings: false });
  for (const name of shapes.keys()) {
    for (const format of ['mosaic_gpt', 'mpt'] as const) assert.equal(canonicalName(format, sourceName(format, name), false), name);
  }
  assert.equal(mosaicGptName('blocks.3.mlp.down.bias'), 'transformer.blocks.3.mlp.mlp_down.bias');
  assert.equal(sourceName('mpt', 'blocks.0.ln2.weight'), 'transformer.blocks.0.norm_2.weight');
  assert.equal(canonicalName('mpt', 'lm_head.weight', true), null);
  assert.equal(canonicalName('mpt', 'lm_head.weight', false), 'lmHead.weight');
  assert.equal(canonicalName('mosaic_gpt', 'transformer.blocks.0.norm_1.weight', true), undefined);
});

// ---- configs ----

test('config.json of both formats: defaults of the original code and options', () => {
  const mosaic = parseHfConfig({ model_type: 'mosaic_gpt', d_model: 128, n_heads: 8, n_layers: 3, max_seq_len: 64, vocab_size: 100 }).config;
  assert.deepEqual(mosaic, {
    dModel: 128, nHeads: 8, nLayers: 3, maxSeqLen: 64, vocabSize: 100, expansionRatio: 4, alibi: false, alibiBiasMax: 8,
    alibiSlopes: 'plain', learnedPosEmb: true, qkLn: false, clipQkv: null, softmaxScale: null, noBias: false, logitScale: null,
    layerNormEps: 1e-5, tieWordEmbeddings: true, embeddingFraction: 1,
  } satisfies MptConfig);
  const mpt = parseHfConfig({
    model_type: 'mpt', d_model: 256, n_heads: 4, n_layers: 2, max_seq_len: 32, vocab_size: 10, learned_pos_emb: true,
    logit_scale: 'inv_sqrt_d_model', layer_norm_epsilon: 1e-6, tie_word_embeddings: false, norm_type: 'layernorm',
    attn_config: { alibi: false, clip_qkv: 6, softmax_scale: 0.5, alibi_bias_max: 4 }, ffn_config: { ffn_type: 'mptmlp', ffn_hidden_size: 512 },
  }).config;
  assert.equal(mpt.logitScale, 1 / 16);
  assert.equal(mpt.learnedPosEmb, true);
  assert.equal(mpt.layerNormEps, 1e-6);
  assert.equal(mpt.tieWordEmbeddings, false);
  assert.equal(mpt.clipQkv, 6);
  assert.equal(mpt.softmaxScale, 0.5);
  assert.equal(mpt.alibiBiasMax, 4);
  assert.equal(mpt.expansionRatio, 2);
  assert.equal(mpt.alibiSlopes, 'power-of-two');
  assert.equal(parseHfConfig({ ...MPT_CONFIG, learned_pos_emb: true }).config.learnedPosEmb, false);
  assert.equal(parseHfConfig({ model_type: 'mosaic_gpt', d_model: 8, n_heads: 2, n_layers: 1, max_seq_len: 4, vocab_size: 5, alibi: true }).config.learnedPosEmb, false);
});

test('configs we cannot run are refused by option and value', () => {
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ ...MPT_CONFIG, attn_config: { ...MPT_CONFIG.attn_config, rope: true } }, /attn_config\.rope = true: rotary/],
    [{ ...MPT_CONFIG, attn_config: { ...MPT_CONFIG.attn_config, prefix_lm: true } }, /attn_config\.prefix_lm = true/],
    [{ ...MPT_CONFIG, attn_config: { ...MPT_CONFIG.attn_config, attn_uses_sequence_id: true } }, /attn_config\.attn_uses_sequence_id = true/],
    [{ ...MPT_CONFIG, attn_config: { ...MPT_CONFIG.attn_config, attn_type: 'multiquery_attention' } }, /attn_config\.attn_type = "multiquery_attention"/],
    [{ ...MPT_CONFIG, attn_config: { ...MPT_CONFIG.attn_config, attn_type: 'grouped_query_attention', kv_n_heads: 2 } }, /attn_config\.attn_type = "grouped_query_attention"/],
    [{ ...MPT_CONFIG, norm_type: 'rmsnorm' }, /norm_type = "rmsnorm"/],
    [{ ...MPT_CONFIG, ffn_config: { ffn_type: 'mptglu' } }, /ffn_config\.ffn_type = "mptglu"/],
    [{ ...MPT_CONFIG, ffn_config: { ffn_type: 'mptmlp', ffn_act_fn: { name: 'silu' } } }, /ffn_config\.ffn_act_fn/],
    [{ ...MPT_CONFIG, logit_scale: 'huge' }, /logit_scale = "huge"/],
    [{ model_type: 'mosaic_gpt', d_model: 8, n_heads: 2, n_layers: 1, max_seq_len: 4, vocab_size: 5, prefix_lm: true }, /prefix_lm = true/],
    [{ model_type: 'gpt2', n_embd: 8 }, /model_type "gpt2" is not supported/],
    [{ d_model: 8 }, /no model_type/],
    [{ model_type: 'mpt', n_heads: 2, n_layers: 1, max_seq_len: 4, vocab_size: 5 }, /required field d_model is missing/],
    [{ model_type: 'mpt', d_model: 9, n_heads: 2, n_layers: 1, max_seq_len: 4, vocab_size: 5 }, /not divisible/],
    [{ model_type: 'mpt', d_model: 8, n_heads: 2, n_layers: '1', max_seq_len: 4, vocab_size: 5 }, /n_layers = "1": expected a positive integer/],
  ];
  for (const [raw, pattern] of cases) {
    assert.throws(() => parseHfConfig(raw, '/m/config.json'), (error: Error) => {
      assert.ok(error instanceof ConfigError, `${error.name}: ${error.message}`);
      assert.match(error.message, /^\/m\/config\.json: /);
      assert.match(error.message, pattern);
      return true;
    }, JSON.stringify(raw));
  }
});

// ---- bad folders and files ----

test('missing folder, missing config.json, missing weights', async () => {
  const dir = await tempDir();
  await rejectsWith(openModelFolder(join(dir, 'nope')), UserError, /nope: no such folder/);
  await rejectsWith(openModelFolder(dir), UserError, /no config\.json/);
  await fs.copyFile(join(tiny(), 'config.json'), join(dir, 'config.json'));
  await rejectsWith(openModelFolder(dir), UserError, /no weights \(looked for model\.safetensors/);
  await rejectsWith(openModelFolder(join(tiny(), 'config.json')), UserError, /not a folder/);
});

test('unknown model_type and malformed config JSON name the file', async () => {
  const dir = await copyFixtureFolder(tiny(), ['model.safetensors']);
  await fs.writeFile(join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', hidden_size: 64 }));
  await rejectsWith(openModelFolder(dir), ConfigError, /config\.json: model_type "llama" is not supported/);
  await fs.writeFile(join(dir, 'config.json'), '{"model_type": "mosaic_gpt", "d_model": 64,');
  await rejectsWith(openModelFolder(dir), FormatError, new RegExp(`${dir}/config\\.json: malformed JSON`));
});

test('an unsupported option in a folder is refused (rope)', async () => {
  const dir = await makeMptFolder({ ...MPT_CONFIG, attn_config: { ...MPT_CONFIG.attn_config, rope: true } });
  await rejectsWith(openModelFolder(dir), ConfigError, /attn_config\.rope = true/);
});

test('truncated and corrupt safetensors files give a FormatError naming the file', async () => {
  const original = await fs.readFile(join(tiny(), 'model.safetensors'));
  const dir = await copyFixtureFolder(tiny(), ['config.json']);
  const path = join(dir, 'model.safetensors');
  const expectBroken = async (bytes: Uint8Array, pattern: RegExp) => {
    await fs.writeFile(path, bytes);
    await rejectsWith(openModelFolder(dir), FormatError, new RegExp(`${path.replace(/[.]/g, '\\.')}: .*${pattern.source}`));
  };
  await expectBroken(original.subarray(0, original.length - 100), /truncated: tensor .* ends at data byte/);
  await expectBroken(original.subarray(0, 5), /truncated: 5 bytes/);
  await expectBroken(original.subarray(0, 300), /truncated: the header claims/);
  const headerLength = Number(original.readBigUInt64LE(0));
  const header = original.subarray(8, 8 + headerLength).toString('utf8');
  const withHeader = (json: string) => {
    const padded = Buffer.from(json.padEnd(headerLength, ' '));
    assert.equal(padded.length, headerLength);
    return Buffer.concat([original.subarray(0, 8), padded, original.subarray(8 + headerLength)]);
  };
  const garbled = Buffer.from(original);
  garbled.write('#!@', 8); // the opening brace
  await expectBroken(garbled, /corrupt safetensors header: not valid JSON/);
  const huge = Buffer.from(original);
  huge.writeBigUInt64LE(1n << 40n, 0);
  await expectBroken(huge, /corrupt safetensors header: declared header length/);
  await expectBroken(withHeader(header.replace('"shape":[192,64]', '"shape":[192,65]')), /tensor transformer\.blocks\.0\.attn\.Wqkv\.weight: data_offsets \[0, 49152\] hold 49152 bytes but shape \[192, 65\] of F32 needs 49920/);
  await expectBroken(withHeader(header.replace('"dtype":"F32","shape":[192,64]', '"dtype":"I32","shape":[192,64]')), /tensor transformer\.blocks\.0\.attn\.Wqkv\.weight has dtype I32; only F32, F16 and BF16/);
  await expectBroken(withHeader(header.replace('"data_offsets":[49152,49408]', '"data_offsets":[49000,49256]')), /overlap/);
});

test('truncated and corrupt pytorch_model.bin give a FormatError naming the file', async () => {
  const original = await fs.readFile(join(tiny(), 'pytorch_model.bin'));
  const dir = await copyFixtureFolder(tiny(), ['config.json']);
  const path = join(dir, 'pytorch_model.bin');
  const expectBroken = async (bytes: Uint8Array, pattern: RegExp) => {
    await fs.writeFile(path, bytes);
    await rejectsWith(openModelFolder(dir), FormatError, new RegExp(`${path.replace(/[.]/g, '\\.')}: .*${pattern.source}`));
  };
  await expectBroken(original.subarray(0, original.length / 2), /truncated or corrupt zip: no end-of-central-directory/);
  await expectBroken(original.subarray(0, 10), /truncated or not a zip file/);
  // Cut out the middle but keep the end record: the directory now points past the end.
  await expectBroken(Buffer.concat([original.subarray(0, 1000), original.subarray(original.length - 2000)]), /truncated or corrupt zip/);
  const flipped = Buffer.from(original);
  flipped[200] ^= 0xff; // inside data.pkl
  await expectBroken(flipped, /CRC-32 mismatch in pytorch_model\/data\.pkl/);
  const badDirectory = Buffer.from(original);
  const cd = badDirectory.lastIndexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
  badDirectory[cd + 1] = 0; // a damaged central directory signature
  await expectBroken(badDirectory, /corrupt zip: central directory entry/);
});

test('an index naming a missing shard, and a tensor present twice, are reported by name', async () => {
  const dir = await copyFixtureFolder(tinyBf16(), ['config.json', 'pytorch_model.bin.index.json', 'pytorch_model-00001-of-00002.bin']);
  await rejectsWith(openModelFolder(dir), UserError, /pytorch_model\.bin\.index\.json names shard pytorch_model-00002-of-00002\.bin, which is missing/);

  const dup = await copyFixtureFolder(tiny(), ['config.json']);
  const [first, ...rest] = await fixtureTensors();
  const asWrite = (t: typeof first) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: t.bytes });
  await writeSafetensors(join(dup, 'a.safetensors'), [asWrite(first)]);
  await writeSafetensors(join(dup, 'b.safetensors'), [asWrite(first), ...rest.map(asWrite)]);
  const weightMap = Object.fromEntries([[first.name, 'a.safetensors'], ...rest.map((t) => [t.name, 'b.safetensors'])]);
  await fs.writeFile(join(dup, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  await rejectsWith(openModelFolder(dup), FormatError, new RegExp(`b\\.safetensors: tensor ${first.name.replace(/\./g, '\\.')} is present twice`));
});

test('checkTensorsAgainst lists missing, unexpected and mis-shaped tensors by their names in the file', async () => {
  const folder = await openModelFolder(tiny());
  try {
    const config: MptConfig = { ...folder.config, vocabSize: 50000, nLayers: 3 };
    const shapes = parameterShapes(config);
    shapes.delete('lnF.weight');
    assert.throws(() => checkTensorsAgainst(shapes, folder), (error: Error) => {
      assert.ok(error instanceof UserError);
      assert.match(error.message, /missing tensors: transformer\.blocks\.2\.ln_1\.weight, /);
      assert.match(error.message, /unexpected tensors: transformer\.ln_f\.weight/);
      assert.match(error.message, /shape mismatches: transformer\.wte\.weight is \[50432, 64\], the config needs \[50000, 64\]/);
      return true;
    });
  } finally {
    await folder.close();
  }
});

test('model.safetensors.index.json shards load to the same tensors as the single file', async () => {
  const dir = await copyFixtureFolder(tiny(), ['config.json']);
  const tensors = await fixtureTensors();
  const half = Math.ceil(tensors.length / 2);
  const shards = [tensors.slice(0, half), tensors.slice(half)];
  const weightMap: Record<string, string> = {};
  for (const [i, shard] of shards.entries()) {
    const name = `model-0000${i + 1}-of-00002.safetensors`;
    await writeSafetensors(join(dir, name), shard.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: t.bytes })), { format: 'pt' });
    for (const t of shard) weightMap[t.name] = name;
  }
  await fs.writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
  const folder = await openModelFolder(dir);
  const reference = await openModelFolder(tiny());
  try {
    assert.equal(new Set([...folder.tensors.values()].map((t) => t.file)).size, 2);
    const [a, b] = [await readAll(folder), await readAll(reference)];
    assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
    for (const [name, bytes] of a) assert.ok(bytes.equals(b.get(name)!), name);
  } finally {
    await folder.close();
    await reference.close();
  }
  // An index entry whose shard does not hold the tensor is reported.
  const first = tensors[0].name;
  await fs.writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { ...weightMap, [first]: 'model-00002-of-00002.safetensors' } }));
  await rejectsWith(openModelFolder(dir), FormatError, /is not listed for this shard|does not hold them/);
});
