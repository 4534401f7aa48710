import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer } from '../src/tokenizer/index.js';
import { prepareDataset } from '../src/data/prepare.js';
import { tokenizerFile } from '../src/io/tokenizer-location.js';
import { mergeParts, partManifestPath } from '../src/data/merge.js';
import { readManifest, type DatasetManifest, type Split } from '../src/data/manifest.js';
import { readDocuments } from '../src/data/read-documents.js';
import { assignFiles, listInputs } from '../src/data/sources.js';
import { inValidation } from '../src/data/validation-split.js';
import { Packer } from '../src/data/packer.js';
import { fixture, projectRoot } from './fixtures.js';
import { hubCacheWith } from './hub-cache.js';

const corpus = join(projectRoot, 'test', 'data', 'corpus');
const tokenizerPath = fixture('mosaic-gpt-tiny', 'tokenizer.json');
const tokenizer = Tokenizer.fromFile(tokenizerPath);
const SEQ = 64;

const tmp = () => mkdtempSync(join(tmpdir(), 'mpt-data-prep-'));

/** Every token of a split's shards, in manifest order. */
function shardTokens(dir: string, manifest: DatasetManifest, source: string, split: Split): number[] {
  const out: number[] = [];
  for (const shard of manifest.sources[source]![split].shards) {
    const bytes = readFileSync(join(dir, shard.file));
    assert.equal(bytes.length % (SEQ * 2), 0, `${shard.file} holds whole samples`);
    for (let i = 0; i < bytes.length; i += 2) out.push(bytes.readUInt16LE(i));
  }
  return out;
}

/** What concat-tokens packing must produce: each document's ids from the real tokenizer, then EOS. */
type Expected = Record<Split, number[]> & { docs: Record<Split, number> };
async function expectedStreams(files: { source: string; path: string }[], valFraction: number): Promise<Map<string, Expected>> {
  const streams = new Map<string, Expected>();
  for (const f of files) {
    const s = streams.get(f.source) ?? { train: [], val: [], docs: { train: 0, val: 0 } };
    streams.set(f.source, s);
    for await (const doc of readDocuments(join(corpus, f.path), { onBadLine: 'fail' })) {
      const split = inValidation(doc.text, valFraction) ? 'val' : 'train';
      s[split].push(...tokenizer.encode(doc.text), tokenizer.eosId);
      s.docs[split]++;
    }
  }
  return streams;
}

function checkPacking(dir: string, manifest: DatasetManifest, expected: Map<string, Expected>): void {
  for (const [source, streams] of expected) {
    for (const split of ['train', 'val'] as const) {
      const want = streams[split];
      const stats = manifest.sources[source]![split];
      const got = shardTokens(dir, manifest, source, split);
      assert.equal(stats.samples, Math.floor(want.length / SEQ), `${source} ${split}: every whole sample written`);
      assert.equal(got.length, stats.samples * SEQ, `${source} ${split}: samples of exactly ${SEQ} tokens`);
      assert.deepEqual(got, want.slice(0, got.length), `${source} ${split}: the tokenizer's ids, in document order, EOS after each document`);
      assert.equal(stats.droppedTokens, want.length - got.length, `${source} ${split}: the tail shorter than a sample is dropped and counted`);
      assert.ok(stats.droppedTokens < SEQ);
      assert.equal(stats.documents, streams.docs[split]);
    }
  }
}

test('prepare writes exactly the tokenizer ids, packed in order with EOS between documents, in whole samples', async () => {
  const out = tmp();
  try {
    const notices: string[] = [];
    const result = await prepareDataset({ input: corpus, output: out, tokenizer: tokenizerPath, seqLen: SEQ, threads: 2, shardBytes: SEQ * 2 * 5, quietProgress: true, onNotice: (m) => notices.push(m) });
    const manifest = readManifest(out);
    assert.deepEqual(result.manifest, manifest);
    assert.equal(manifest.tokenizerHash, tokenizer.hash);
    assert.equal(manifest.seqLen, SEQ);
    assert.deepEqual(Object.keys(manifest.sources).sort(), ['book', 'c4', 'github', 'stackexchange', 'wikipedia']);
    assert.ok(manifest.sources.c4!.train.shards.length > 1, 'several shards of 5 samples');
    const listing = await listInputs(corpus);
    checkPacking(out, manifest, await expectedStreams(listing.files, 0));
    // Documents: 25 c4 paragraphs (JSONL), 30 MPL paragraphs (gzip), 40 strings (zstd), 2 text files, 4 code documents.
    const docs = Object.fromEntries(Object.entries(manifest.sources).map(([s, st]) => [s, st.train.documents]));
    assert.deepEqual(docs, { book: 2, c4: 25, github: 4, stackexchange: 40, wikipedia: 30 });
    assert.deepEqual(notices, []);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('the validation split holds out whole documents by content hash; thread count does not change a byte', async () => {
  const a = tmp(), b = tmp();
  try {
    await prepareDataset({ input: corpus, output: a, tokenizer: tokenizerPath, seqLen: SEQ, threads: 1, valFraction: 0.3, quietProgress: true });
    await prepareDataset({ input: corpus, output: b, tokenizer: join(tokenizerPath, '..'), seqLen: SEQ, threads: 3, valFraction: 0.3, quietProgress: true });
    const ma = readManifest(a), mb = readManifest(b);
    assert.deepEqual(ma, mb);
    const listing = await listInputs(corpus);
    checkPacking(a, ma, await expectedStreams(listing.files, 0.3));
    const held = Object.values(ma.sources).reduce((n, s) => n + s.val.documents, 0);
    const all = Object.values(ma.sources).reduce((n, s) => n + s.val.documents + s.train.documents, 0);
    assert.ok(held > 0.1 * all && held < 0.5 * all, `${held} of ${all} documents held out for a 0.3 fraction`);
    for (const [source, stats] of Object.entries(ma.sources)) {
      for (const split of ['train', 'val'] as const) {
        stats[split].shards.forEach((sh) => assert.deepEqual(readFileSync(join(a, sh.file)), readFileSync(join(b, sh.file)), `${source} ${sh.file}`));
      }
    }
  } finally {
    rmSync(a, { recursive: true, force: true });
    rmSync(b, { recursive: true, force: true });
  }
});

test('--shard i/N: parts split the files deterministically, merge checks and joins their manifests', async () => {
  const out = tmp();
  try {
    const listing = await listInputs(corpus);
    const parts = assignFiles(listing.files, 3);
    assert.deepEqual(parts.flat().map((f) => f.path).sort(), listing.files.map((f) => f.path).sort(), 'each file in exactly one part');
    assert.deepEqual(assignFiles(listing.files, 3), parts, 'deterministic');
    const run = (index: number) => prepareDataset({ input: corpus, output: out, tokenizer: tokenizerPath, seqLen: SEQ, threads: 1, shard: { index, count: 3 }, quietProgress: true });
    await run(2);
    await run(0);
    await assert.rejects(mergeParts(out), /1 of 3 parts are not done yet: 1\/3/);
    await assert.rejects(() => readManifestAsync(out), /manifest.json is missing .*mpt data merge/);
    await assert.rejects(run(0), /already prepared \(use --force/);
    await run(1);
    const manifest = await mergeParts(out);
    assert.deepEqual(readManifest(out), manifest);
    assert.equal(manifest.parts, 3);
    const single = Object.fromEntries(Object.entries(manifest.sources).map(([s, st]) => [s, st.train.documents]));
    assert.deepEqual(single, { book: 2, c4: 25, github: 4, stackexchange: 40, wikipedia: 30 });
    // Each part packs its own files; the merged index lists part 0's shards, then part 1's, then part 2's.
    for (const [source, stats] of Object.entries(manifest.sources)) {
      const expected: number[] = [];
      for (let p = 0; p < 3; p++) {
        const stream = (await expectedStreams(parts[p]!.filter((f) => f.source === source), 0)).get(source)?.train ?? [];
        expected.push(...stream.slice(0, Math.floor(stream.length / SEQ) * SEQ));
      }
      assert.deepEqual(shardTokens(out, manifest, source, 'train'), expected, source);
      assert.equal(stats.badLines, 0);
    }
    // A part from another run (other seqLen) is refused by name.
    const file = partManifestPath(out, 1, 3);
    const part = JSON.parse(readFileSync(file, 'utf8'));
    writeFileSync(file, JSON.stringify({ ...part, seqLen: 128, sources: {} }));
    await assert.rejects(mergeParts(out), /seqLen is 128 but .* has 64: these parts are not one dataset/);
    writeFileSync(file, JSON.stringify({ ...part, inputs: part.inputs.slice(1), listingFiles: part.listingFiles }));
    await assert.rejects(mergeParts(out), /do not add up to the listing/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

async function readManifestAsync(dir: string) {
  return readManifest(dir);
}

test('packer: every token of every document once and in order, EOS after each, every sample exactly seqLen', () => {
  let seed = 12345;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296);
  for (const seqLen of [1, 7, 64]) {
    const samples: number[][] = [];
    const packer = new Packer(seqLen, 0, (s) => samples.push(Array.from(s)));
    const stream: number[] = [];
    for (let d = 0; d < 300; d++) {
      const doc = Array.from({ length: Math.floor(rand() * 3 * seqLen) }, () => 1 + Math.floor(rand() * 50000));
      packer.addDocument(doc);
      stream.push(...doc, 0);
    }
    const stats = packer.finish();
    assert.ok(samples.every((s) => s.length === seqLen));
    assert.deepEqual(samples.flat(), stream.slice(0, samples.length * seqLen));
    assert.equal(stats.samples, samples.length);
    assert.equal(stats.droppedTokens, stream.length - samples.length * seqLen);
    assert.ok(stats.droppedTokens < seqLen);
    assert.equal(stats.documents, 300);
  }
  assert.throws(() => new Packer(8, 0, () => {}).addDocument([70000]), /does not fit the uint16 shard format/);
});

test('a shard whose size does not match the manifest is refused', async () => {
  const out = tmp();
  try {
    await prepareDataset({ input: corpus, output: out, tokenizer: tokenizerPath, seqLen: SEQ, threads: 1, sources: ['c4'], quietProgress: true });
    const manifest = readManifest(out);
    const shard = join(out, manifest.sources.c4!.train.shards[0]!.file);
    writeFileSync(shard, readFileSync(shard).subarray(0, statSync(shard).size - 2));
    assert.throws(() => readManifest(out), /expected \d+ bytes .* found/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('--tokenizer takes a file, a folder, or a hub name resolved in the Hugging Face cache', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mpt-tok-'));
  try {
    const folder = fixture('mosaic-gpt-tiny');
    assert.equal(await tokenizerFile(folder), join(folder, 'tokenizer.json'));
    assert.equal(await tokenizerFile(join(folder, 'tokenizer.json')), join(folder, 'tokenizer.json'));
    const snapshot = hubCacheWith(dir, 'EleutherAI/gpt-neox-20b', [join(folder, 'tokenizer.json')]);
    assert.equal(await tokenizerFile('EleutherAI/gpt-neox-20b', { cacheDir: dir, download: false }), join(snapshot, 'tokenizer.json'));
    await assert.rejects(tokenizerFile('EleutherAI/other', { cacheDir: dir, download: false }), /not in the hub cache/);
    await assert.rejects(tokenizerFile(join(dir, 'missing.json')), /does not exist \(a tokenizer.json, a model folder, or a hub name/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
