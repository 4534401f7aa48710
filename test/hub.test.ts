import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { createHash } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { fixture } from './fixtures.js';
import { UserError } from '../src/util/errors.js';
import { openModelFolder } from '../src/io/model-folder.js';
import { hubCacheDir, looksLikeHubName, resolveHubModel } from '../src/io/hub.js';

/**
 * A local stand-in for the Hugging Face hub: `/ORG/NAME/resolve/REV/FILE` answers small files directly and
 * large ones with a 302 to a "CDN" path, with the headers the hub sends (X-Repo-Commit, ETag,
 * X-Linked-Etag, X-Linked-Size), Range requests, and 404s with X-Error-Code for what does not exist.
 */
interface FakeRepo { dir: string; files: string[]; commit: string }
interface Logged { method: string; url: string; range?: string }

async function startHub(repos: Record<string, FakeRepo>, interruptOnce = new Set<string>()) {
  const log: Logged[] = [];
  const contents = new Map<string, Buffer>();
  const read = async (repo: FakeRepo, file: string) => {
    const key = `${repo.dir}/${file}`;
    if (!contents.has(key)) contents.set(key, await fs.readFile(join(repo.dir, file)));
    return contents.get(key)!;
  };
  const isLarge = (file: string) => /\.(bin|safetensors)$/.test(file);
  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url!, 'http://x');
    log.push({ method: req.method!, url: url.pathname, range: req.headers.range });
    const resolve = /^\/([^/]+)\/([^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const cdn = /^\/cdn\/([^/]+)\/([^/]+)\/(.+)$/.exec(url.pathname);
    const repo = resolve ? repos[`${resolve[1]}/${resolve[2]}`] : cdn ? repos[`${cdn[1]}/${cdn[2]}`] : undefined;
    if (resolve && `${resolve[1]}/${resolve[2]}` === 'oldorg/tiny') { // a renamed repository: relative redirect, no metadata
      res.writeHead(307, { location: url.pathname.replace('/oldorg/', '/testorg/') }).end();
      return;
    }
    if (!repo) { res.writeHead(404, { 'x-error-code': 'RepoNotFound' }).end('Repository not found'); return; }
    if (resolve) {
      const [, org, name, rev, file] = resolve;
      if (rev !== 'main' && rev !== repo.commit) { res.writeHead(404, { 'x-error-code': 'RevisionNotFound' }).end(); return; }
      if (!repo.files.includes(file)) { res.writeHead(404, { 'x-error-code': 'EntryNotFound' }).end(); return; }
      const body = await read(repo, file);
      const gitEtag = `"${createHash('sha1').update(body).digest('hex')}"`;
      if (isLarge(file)) {
        res.writeHead(302, {
          location: `/cdn/${org}/${name}/${file}`, 'x-repo-commit': repo.commit, etag: gitEtag,
          'x-linked-etag': `"${createHash('sha256').update(body).digest('hex')}"`, 'x-linked-size': String(body.length),
        }).end();
        return;
      }
      res.writeHead(200, { 'x-repo-commit': repo.commit, etag: gitEtag, 'content-length': body.length });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    const file = cdn![3];
    const body = await read(repo, file);
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const start = range ? Number(range[1]) : 0;
    if (start >= body.length) { res.writeHead(416).end(); return; }
    const headers = { 'content-length': body.length - start, 'accept-ranges': 'bytes' };
    if (range) res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` });
    else res.writeHead(200, headers);
    if (interruptOnce.delete(file)) {
      // Send a third of the file, then drop the connection as a flaky network would.
      res.write(body.subarray(start, start + Math.floor((body.length - start) / 3)), () => res.socket?.destroy());
      return;
    }
    res.end(body.subarray(start));
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { endpoint, log, close: () => new Promise<void>((done) => { server.closeAllConnections(); server.close(() => done()); }) };
}

const COMMIT = 'a'.repeat(8) + '0123456789abcdef0123456789abcdef';
const BF16_COMMIT = 'b'.repeat(40);
const TINY_FILES = ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'model.safetensors', 'pytorch_model.bin'];
const BF16_FILES = ['config.json', 'pytorch_model.bin.index.json', 'pytorch_model-00001-of-00002.bin', 'pytorch_model-00002-of-00002.bin'];

const servers: Array<() => Promise<void>> = [];
after(async () => { for (const close of servers) await close(); });

async function hub(interrupt: string[] = []) {
  const h = await startHub({
    'testorg/tiny': { dir: fixture('mosaic-gpt-tiny'), files: TINY_FILES, commit: COMMIT },
    'testorg/tiny-bf16': { dir: fixture('mosaic-gpt-tiny-bf16'), files: BF16_FILES, commit: BF16_COMMIT },
  }, new Set(interrupt));
  servers.push(h.close);
  return h;
}

const newCache = () => fs.mkdtemp(join(tmpdir(), 'mpt-hub-'));

async function sameTensors(a: string, b: string): Promise<number> {
  const [x, y] = [await openModelFolder(a), await openModelFolder(b)];
  try {
    assert.deepEqual([...x.tensors.keys()].sort(), [...y.tensors.keys()].sort());
    for (const [name, t] of x.tensors) assert.ok((await t.read()).equals(await y.tensors.get(name)!.read()), name);
    return x.tensors.size;
  } finally {
    await x.close();
    await y.close();
  }
}

test('hub names are told apart from paths', () => {
  assert.ok(looksLikeHubName('mosaicml/mpt-1b-redpajama-200b'));
  assert.ok(looksLikeHubName('org/name@v1.0'));
  assert.ok(!looksLikeHubName('./org/name'));
  assert.ok(!looksLikeHubName('/abs/path'));
  assert.ok(!looksLikeHubName('a/b/c'));
  assert.ok(!looksLikeHubName('model'));
});

test('the cache folder follows HF_HUB_CACHE, then HF_HOME/hub, then ~/.cache/huggingface/hub', () => {
  const saved = { cache: process.env.HF_HUB_CACHE, home: process.env.HF_HOME };
  try {
    process.env.HF_HUB_CACHE = '/x/cache';
    process.env.HF_HOME = '/y/home';
    assert.equal(hubCacheDir(), '/x/cache');
    delete process.env.HF_HUB_CACHE;
    assert.equal(hubCacheDir(), '/y/home/hub');
    delete process.env.HF_HOME;
    assert.match(hubCacheDir(), /\.cache\/huggingface\/hub$/);
  } finally {
    if (saved.cache === undefined) delete process.env.HF_HUB_CACHE; else process.env.HF_HUB_CACHE = saved.cache;
    if (saved.home === undefined) delete process.env.HF_HOME; else process.env.HF_HOME = saved.home;
  }
});

test('downloads a model into the hub cache layout, resuming a dropped connection with a Range request', async () => {
  const { endpoint, log } = await hub(['model.safetensors']);
  const cacheDir = await newCache();
  const folder = await openModelFolder('testorg/tiny', { endpoint, cacheDir, quiet: true });
  const repoDir = join(cacheDir, 'models--testorg--tiny');
  try {
    assert.equal(folder.dir, join(repoDir, 'snapshots', COMMIT));
    assert.equal(folder.format, 'mosaic_gpt');
  } finally {
    await folder.close();
  }
  assert.equal(await fs.readFile(join(repoDir, 'refs', 'main'), 'utf8'), COMMIT);
  const body = await fs.readFile(fixture('mosaic-gpt-tiny', 'model.safetensors'));
  const sha256 = createHash('sha256').update(body).digest('hex');
  assert.equal(await fs.readlink(join(folder.dir, 'model.safetensors')), `../../blobs/${sha256}`);
  assert.match(await fs.readlink(join(folder.dir, 'config.json')), /^\.\.\/\.\.\/blobs\/[0-9a-f]{40}$/);
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) assert.ok(existsSync(join(folder.dir, f)), f);
  assert.ok(!existsSync(join(folder.dir, 'pytorch_model.bin')), 'only the first weights format found is fetched');
  assert.ok(!log.some((r) => r.url.endsWith('pytorch_model.bin')));
  assert.deepEqual((await fs.readdir(join(repoDir, 'blobs'))).filter((f) => f.endsWith('.incomplete')), []);

  const cdnGets = log.filter((r) => r.method === 'GET' && r.url === '/cdn/testorg/tiny/model.safetensors');
  assert.equal(cdnGets.length, 2, 'one interrupted GET, one resumed');
  assert.equal(cdnGets[0].range, undefined);
  // It resumes from what reached the disk: more than nothing, at most what the server sent before dropping.
  const resumedAt = Number(/^bytes=(\d+)-$/.exec(cdnGets[1].range ?? '')?.[1]);
  assert.ok(resumedAt > 0 && resumedAt <= Math.floor(body.length / 3), `resumed at ${cdnGets[1].range}`);
  assert.equal(await sameTensors(folder.dir, fixture('mosaic-gpt-tiny')), 18);

  // A second open is served from the cache without asking the hub.
  const before = log.length;
  const again = await openModelFolder('testorg/tiny', { endpoint, cacheDir, download: false });
  await again.close();
  assert.equal(again.dir, folder.dir);
  assert.equal(log.length, before);
});

test('a partial blob left by an earlier run continues where it stopped', async () => {
  const { endpoint, log } = await hub();
  const cacheDir = await newCache();
  const body = await fs.readFile(fixture('mosaic-gpt-tiny', 'model.safetensors'));
  const blobs = join(cacheDir, 'models--testorg--tiny', 'blobs');
  await fs.mkdir(blobs, { recursive: true });
  await fs.writeFile(join(blobs, `${createHash('sha256').update(body).digest('hex')}.incomplete`), body.subarray(0, 1_000_000));
  const dir = await resolveHubModel('testorg/tiny', { endpoint, cacheDir, quiet: true });
  const gets = log.filter((r) => r.method === 'GET' && r.url.startsWith('/cdn/'));
  assert.deepEqual(gets.map((r) => r.range), ['bytes=1000000-']);
  assert.ok((await fs.readFile(join(dir, 'model.safetensors'))).equals(body));
});

test('a sharded repository is fetched through its index', async () => {
  const { endpoint } = await hub();
  const cacheDir = await newCache();
  const folder = await openModelFolder('testorg/tiny-bf16@main', { endpoint, cacheDir, quiet: true });
  try {
    assert.equal(folder.weightsDtype, 'bfloat16');
    assert.equal(folder.dir, join(cacheDir, 'models--testorg--tiny-bf16', 'snapshots', BF16_COMMIT));
  } finally {
    await folder.close();
  }
  assert.equal(await sameTensors(folder.dir, fixture('mosaic-gpt-tiny-bf16')), 18);
});

test('a missing repository or revision gives a clear error', async () => {
  const { endpoint } = await hub();
  const cacheDir = await newCache();
  await assert.rejects(openModelFolder('testorg/no-such-model', { endpoint, cacheDir, quiet: true }), (error: Error) => {
    assert.ok(error instanceof UserError);
    assert.match(error.message, /^testorg\/no-such-model: repository not found on http:\/\/127\.0\.0\.1:\d+/);
    return true;
  });
  await assert.rejects(resolveHubModel('testorg/tiny@v9', { endpoint, cacheDir, quiet: true }), /testorg\/tiny: revision v9 not found/);
  await assert.rejects(resolveHubModel('testorg/tiny', { endpoint: 'http://127.0.0.1:9', cacheDir, quiet: true }), /testorg\/tiny: cannot reach http:\/\/127\.0\.0\.1:9/);
});

test('offline: HF_HUB_OFFLINE or download: false never touch the network', async () => {
  const { endpoint, log } = await hub();
  const cacheDir = await newCache();
  const saved = process.env.HF_HUB_OFFLINE;
  try {
    process.env.HF_HUB_OFFLINE = '1';
    await assert.rejects(resolveHubModel('testorg/tiny', { endpoint, cacheDir }), /testorg\/tiny: it is not in the hub cache .* and HF_HUB_OFFLINE is set/);
  } finally {
    if (saved === undefined) delete process.env.HF_HUB_OFFLINE; else process.env.HF_HUB_OFFLINE = saved;
  }
  await assert.rejects(resolveHubModel('testorg/tiny', { endpoint, cacheDir, download: false }), /downloads are off/);
  assert.equal(log.length, 0);
});

test('a cache made of plain files (no symlinks) under HF_HUB_CACHE is found by name', async () => {
  const cacheDir = await newCache();
  const snapshot = join(cacheDir, 'models--someorg--tiny', 'snapshots', COMMIT);
  await fs.mkdir(snapshot, { recursive: true });
  await fs.mkdir(join(cacheDir, 'models--someorg--tiny', 'refs'));
  await fs.writeFile(join(cacheDir, 'models--someorg--tiny', 'refs', 'main'), `${COMMIT}\n`);
  for (const f of ['config.json', 'pytorch_model.bin']) await fs.copyFile(fixture('mosaic-gpt-tiny', f), join(snapshot, f));
  const saved = process.env.HF_HUB_CACHE;
  try {
    process.env.HF_HUB_CACHE = cacheDir;
    const folder = await openModelFolder('someorg/tiny', { download: false });
    await folder.close();
    assert.equal(folder.dir, snapshot);
  } finally {
    if (saved === undefined) delete process.env.HF_HUB_CACHE; else process.env.HF_HUB_CACHE = saved;
  }
});

test('a renamed repository (a relative redirect without metadata) is followed', async () => {
  const { endpoint } = await hub();
  const cacheDir = await newCache();
  const dir = await resolveHubModel('oldorg/tiny', { endpoint, cacheDir, quiet: true });
  assert.equal(dir, join(cacheDir, 'models--oldorg--tiny', 'snapshots', COMMIT));
  assert.equal(await sameTensors(dir, fixture('mosaic-gpt-tiny')), 18);
});

test('a model folder without tokenizer.json gets only the tokenizer files of the repository its config names', async () => {
  const { tokenizerFileFor } = await import('../src/io/tokenizer-location.js');
  const h = await startHub({ 'testorg/neox-tokenizer': { dir: fixture('mosaic-gpt-tiny'), files: TINY_FILES, commit: COMMIT } });
  servers.push(h.close);
  const cacheDir = await newCache();
  const model = { dir: await newCache(), rawConfig: { tokenizer_name: 'testorg/neox-tokenizer' } };
  const path = await tokenizerFileFor(model, { endpoint: h.endpoint, cacheDir, quiet: true });
  assert.ok((await fs.readFile(path)).equals(await fs.readFile(fixture('mosaic-gpt-tiny', 'tokenizer.json'))));
  assert.ok(h.log.every((r) => !/\.(bin|safetensors)$/.test(r.url)), 'no weights are fetched');
  // A second time it comes from the cache, without a request.
  const requests = h.log.length;
  assert.equal(await tokenizerFileFor(model, { endpoint: h.endpoint, cacheDir, quiet: true }), path);
  assert.equal(h.log.length, requests);
  await assert.rejects(tokenizerFileFor({ dir: model.dir, rawConfig: {} }), /no tokenizer\.json/);
});
