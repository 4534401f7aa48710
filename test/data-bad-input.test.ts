import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { readDocuments, type Document } from '../src/data/read-documents.js';
import { listInputs } from '../src/data/sources.js';
import { prepareDataset } from '../src/data/prepare.js';
import { readManifest } from '../src/data/manifest.js';
import { FormatError, UserError } from '../src/util/errors.js';
import { fixture, projectRoot } from './fixtures.js';

const corpus = join(projectRoot, 'test', 'data', 'corpus');
const goodZst = join(corpus, 'stackexchange', 'se.jsonl.zst');

async function readAll(path: string, onBadLine: 'fail' | 'skip' = 'fail', reports: string[] = []): Promise<Document[]> {
  const docs: Document[] = [];
  for await (const d of readDocuments(path, { onBadLine, report: (f, line, problem) => reports.push(`${f}:${line}: ${problem}`) })) docs.push(d);
  return docs;
}

function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'mpt-data-bad-'));
  return fn(dir).finally(() => rmSync(dir, { recursive: true, force: true }));
}

test('the good .zst and .gz files read, keeping other fields as metadata', async () => {
  const docs = await readAll(goodZst);
  assert.equal(docs.length, 40);
  assert.deepEqual(docs[3]!.meta, { meta: { n: 3 }, source_url: 'doc-3' });
  assert.equal(docs[3]!.line, 4);
  const gz = await readAll(join(corpus, 'wikipedia', 'wiki.jsonl.gz'));
  assert.equal(gz.length, 30);
  assert.match(gz[0]!.text, /Mozilla Public License/);
});

test('a corrupt .zst is a FormatError naming the file: truncated, or garbage after the magic number', () =>
  withDir(async (dir) => {
    const good = readFileSync(goodZst);
    const truncated = join(dir, 'truncated.jsonl.zst');
    writeFileSync(truncated, good.subarray(0, good.length - 100));
    await assert.rejects(readAll(truncated), (e: Error) => e instanceof FormatError && e.message.startsWith(truncated) && /zstd/.test(e.message));
    const garbage = join(dir, 'garbage.jsonl.zst');
    const bytes = Buffer.from(good);
    for (let i = 12; i < bytes.length; i += 7) bytes[i] ^= 0x5a;
    writeFileSync(garbage, bytes);
    await assert.rejects(readAll(garbage), (e: Error) => e instanceof FormatError && e.message.startsWith(`${garbage}: corrupt zstd data`));
    const notZstd = join(dir, 'plain.jsonl.zst');
    writeFileSync(notZstd, '{"text": "not compressed"}\n');
    await assert.rejects(readAll(notZstd), (e: Error) => e instanceof FormatError && /corrupt zstd data/.test(e.message));
  }));

test('a corrupt .gz is a FormatError naming the file', () =>
  withDir(async (dir) => {
    const good = gzipSync('{"text": "a"}\n'.repeat(1000));
    const truncated = join(dir, 'cut.jsonl.gz');
    writeFileSync(truncated, good.subarray(0, good.length - 20));
    await assert.rejects(readAll(truncated), (e: Error) => e instanceof FormatError && e.message.startsWith(truncated) && /gzip/.test(e.message));
  }));

test('a malformed JSON line: fatal with file and line by default, reported and skipped with the skip policy', () =>
  withDir(async (dir) => {
    const file = join(dir, 'docs.jsonl');
    writeFileSync(file, ['{"text": "one"}', '{"text": "two"}', '{"text": "thr', '', '[1, 2]', '{"text": "five", "id": 5}', '{"text": 6}', '{"title": "no text"}', '{"text": "last"}'].join('\n'));
    await assert.rejects(readAll(file), (e: Error) => e instanceof FormatError && e.message.startsWith(`${file}:3: malformed JSON`) && /--on-bad-line skip/.test(e.message));
    const reports: string[] = [];
    const docs = await readAll(file, 'skip', reports);
    assert.deepEqual(docs.map((d) => [d.text, d.line]), [['one', 1], ['two', 2], ['five', 6], ['last', 9]]);
    assert.deepEqual(docs[2]!.meta, { id: 5 });
    assert.equal(reports.length, 4, 'the blank line 4 is not a document and not an error; the four bad ones are reported');
    assert.match(reports[0]!, /docs\.jsonl:3: malformed JSON/);
    assert.match(reports[1]!, /:5: line is not a JSON object/);
    assert.match(reports[2]!, /:7: "text" is number, expected a string/);
    assert.match(reports[3]!, /:8: missing "text" field/);
  }));

test('a missing text field is fatal by default, naming file and line', () =>
  withDir(async (dir) => {
    const file = join(dir, 'x.jsonl.gz');
    writeFileSync(file, gzipSync('{"text": "ok"}\n{"body": "where is text"}\n'));
    await assert.rejects(readAll(file), (e: Error) => e instanceof FormatError && e.message.startsWith(`${file}:2: missing "text" field`));
  }));

test('invalid UTF-8 in a line is a malformed line, not silently replaced', () =>
  withDir(async (dir) => {
    const file = join(dir, 'bad-utf8.jsonl');
    writeFileSync(file, Buffer.concat([Buffer.from('{"text": "ok"}\n{"text": "'), Buffer.from([0xff, 0xfe]), Buffer.from('"}\n')]));
    await assert.rejects(readAll(file), /bad-utf8\.jsonl:2: line is not valid UTF-8/);
  }));

test('an empty source folder, a missing input folder and a missing source are errors that name them', () =>
  withDir(async (dir) => {
    mkdirSync(join(dir, 'c4'));
    writeFileSync(join(dir, 'c4', 'a.jsonl'), '{"text": "hello"}\n');
    mkdirSync(join(dir, 'arxiv'));
    writeFileSync(join(dir, 'arxiv', 'README.md'), 'not an input');
    await assert.rejects(listInputs(dir), (e: Error) => e instanceof UserError && /source arxiv .* is empty/.test(e.message));
    const only = await listInputs(dir, ['c4']);
    assert.deepEqual(only.files.map((f) => f.path), ['c4/a.jsonl']);
    await assert.rejects(listInputs(dir, ['wikipedia']), /no source folder named wikipedia/);
    await assert.rejects(listInputs(join(dir, 'nope')), /cannot read the input folder/);
    const empty = join(dir, 'empty-root');
    mkdirSync(empty);
    await assert.rejects(listInputs(empty), /no source folders found/);
  }));

test('prepare with --on-bad-line skip reports each bad line and counts them in the manifest; fail stops with file:line', () =>
  withDir(async (dir) => {
    const input = join(dir, 'in'), out = join(dir, 'out');
    mkdirSync(join(input, 'c4'), { recursive: true });
    copyFileSync(join(corpus, 'c4', 'c4-train.00000.jsonl'), join(input, 'c4', 'good.jsonl'));
    writeFileSync(join(input, 'c4', 'bad.jsonl'), '{"text": "fine"}\n{oops\n{"text": "also fine"}\n');
    const tokenizer = fixture('mosaic-gpt-tiny', 'tokenizer.json');
    await assert.rejects(
      prepareDataset({ input, output: out, tokenizer, seqLen: 32, threads: 1, quietProgress: true }),
      (e: Error) => e instanceof FormatError && e.message.startsWith(`${join(input, 'c4', 'bad.jsonl')}:2: malformed JSON`),
    );
    const notices: string[] = [];
    await prepareDataset({ input, output: out, tokenizer, seqLen: 32, threads: 1, onBadLine: 'skip', force: true, quietProgress: true, onNotice: (m) => notices.push(m) });
    assert.equal(notices.length, 1);
    assert.match(notices[0]!, /bad\.jsonl:2: malformed JSON .*\(skipped\)/);
    const manifest = readManifest(out);
    assert.equal(manifest.sources.c4!.badLines, 1);
    assert.equal(manifest.sources.c4!.train.documents, 25 + 2);
    await assert.rejects(prepareDataset({ input, output: join(dir, 'o2'), tokenizer: join(dir, 'no-tokenizer.json'), seqLen: 32, quietProgress: true }), /tokenizer .* does not exist/);
    await assert.rejects(prepareDataset({ input, output: join(dir, 'o3'), tokenizer, seqLen: 0, quietProgress: true }), /--seq-len must be a positive integer/);
  }));
