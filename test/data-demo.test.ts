import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildDemoCorpus, htmlToText, manToText } from '../src/data/demo.js';
import { readDocuments } from '../src/data/read-documents.js';
import { REDPAJAMA_SOURCES, listInputs } from '../src/data/sources.js';
import { main } from '../src/cli/main.js';
import { readManifest } from '../src/data/manifest.js';
import { fixture, projectRoot } from './fixtures.js';

test('the demo corpus has every RedPajama source, each with real text from this machine', async () => {
  const out = mkdtempSync(join(tmpdir(), 'mpt-demo-'));
  try {
    const result = await buildDemoCorpus({ output: out, bytesPerSource: 40_000 });
    assert.deepEqual(Object.keys(result.sources).sort(), [...REDPAJAMA_SOURCES].sort());
    const listing = await listInputs(out);
    assert.deepEqual(listing.sources, [...REDPAJAMA_SOURCES].sort());
    for (const [source, info] of Object.entries(result.sources)) {
      assert.ok(info.bytes >= 32 * 1024 && info.bytes <= 40_000 + 1000, `${source}: ${info.bytes} bytes`);
      const docs = [];
      for await (const d of readDocuments(join(out, source, 'demo.jsonl.gz'), { onBadLine: 'fail' })) docs.push(d);
      assert.equal(docs.length, info.documents);
      assert.ok(docs.every((d) => d.text.length >= 200 && typeof d.meta?.origin === 'string'), source);
    }
    // Text of the expected kinds: code in github, no leftover groff or HTML markup.
    const first = async (source: string) => {
      for await (const d of readDocuments(join(out, source, 'demo.jsonl.gz'), { onBadLine: 'fail' })) return d.text;
      return '';
    };
    assert.match(await first('github'), /\b(def|function|import|class|const|return)\b/);
    assert.doesNotMatch(await first('wikipedia'), /^\.(SH|TH|PP)\b|\\f[BIR]/m);
    assert.doesNotMatch(await first('common_crawl'), /<\/?(p|div|a|html)\b/i);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('a demo source that finds no text fails clearly, naming it and where it looked', async () => {
  const out = mkdtempSync(join(tmpdir(), 'mpt-demo-'));
  try {
    await assert.rejects(
      buildDemoCorpus({ output: out, bytesPerSource: 40_000, roots: { book: ['/nonexistent/info'] } }),
      /demo source book: found only 0 bytes of text .* in \/nonexistent\/info \(missing: \/nonexistent\/info\)/,
    );
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('markup converters keep the words and drop the markup', () => {
  assert.equal(manToText('.TH LS 1\n.SH NAME\nls \\- list \\fBdirectory\\fR contents\n.\\" a comment\n.B \\-a'), '\nNAME\nls - list directory contents\n-a');
  assert.equal(htmlToText('<html><head><title>x</title></head><body><p>A &amp; B&#33;</p><script>var x;</script></body></html>').trim(), 'A & B!');
});

test('CLI: data prepare --json and data merge on the test corpus', async () => {
  const out = mkdtempSync(join(tmpdir(), 'mpt-cli-'));
  const corpus = join(projectRoot, 'test', 'data', 'corpus');
  const tokenizer = fixture('mosaic-gpt-tiny');
  const written: string[] = [];
  const write = process.stdout.write;
  // Only strings: the test runner itself reports through stdout with binary chunks, which pass through.
  process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) =>
    typeof chunk === 'string' ? (written.push(chunk), true) : (write as (...a: unknown[]) => boolean).call(process.stdout, chunk, ...rest)) as typeof process.stdout.write;
  let codes: number[];
  try {
    codes = [
      await main(['data', 'prepare', corpus, out, '--tokenizer', tokenizer, '--seq-len', '32', '--threads', '1', '--shard', '0/2', '--sources', 'c4,book', '--quiet', '--json']),
      await main(['data', 'prepare', corpus, out, '--tokenizer', tokenizer, '--seq-len', '32', '--threads', '1', '--shard', '1/2', '--sources', 'c4,book', '--quiet']),
      await main(['data', 'merge', out]),
      await main(['data', 'prepare', corpus, out, '--seq-len', '32']),
      await main(['data', 'prepare', corpus, out, '--tokenizer', tokenizer, '--shard', '2/2']),
    ];
  } finally {
    process.stdout.write = write;
  }
  try {
    assert.deepEqual(codes, [0, 0, 0, 1, 1]);
    const part = JSON.parse(written[0]!);
    assert.deepEqual(part.part, { index: 0, count: 2 });
    assert.ok(part.tokens > 0);
    assert.match(written.join(''), /merged 2 parts into/);
    const manifest = readManifest(out);
    assert.deepEqual(Object.keys(manifest.sources).sort(), ['book', 'c4']);
    assert.equal(manifest.sources.c4!.train.documents + manifest.sources.c4!.val.documents, 25);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
