import { createHash } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { UserError } from '../util/errors.js';
import { writeFileAtomic } from '../util/atomic.js';
import { Progress } from '../util/progress.js';
import { WEIGHT_FILES, parseWeightIndex } from './weight-files.js';

/**
 * Hugging Face hub names (`mosaicml/mpt-1b-redpajama-200b`) resolved in the hub cache, with the layout
 * huggingface_hub uses (`models--ORG--NAME/{refs/REV, snapshots/COMMIT/FILE → ../../blobs/ETAG}`), so
 * a model downloaded by Python is found here and the other way round. Missing files are downloaded
 * from `$HF_ENDPOINT`, resumably and atomically.
 */
export interface HubOptions {
  /** Download what the cache lacks (default true; `HF_HUB_OFFLINE` turns it off). */
  download?: boolean;
  /** A branch, tag or commit; default `main` (or the `@rev` of `org/name@rev`). */
  revision?: string;
  /** No progress bars. */
  quiet?: boolean;
  /** What to fetch: a whole model (config, tokenizer, weights; default) or only the tokenizer files. */
  files?: 'model' | 'tokenizer';
  /** Override `$HF_ENDPOINT` / the cache folder (tests). */
  endpoint?: string;
  cacheDir?: string;
}

const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];
const RETRIES = 5;

/** `org/name` or `org/name@revision` (not a path: no leading `.` or `/`, exactly one slash before any `@`). */
export function looksLikeHubName(s: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9_.-]*\/[A-Za-z0-9][A-Za-z0-9_.-]*(@[A-Za-z0-9_./-]+)?$/.test(s);
}

/**
 * A name that may be a local path or a hub name (`model.pretrained`, `tokenizer.name`), resolved as
 * transformers' from_pretrained does: an existing path (relative to `base`) is the path, made absolute;
 * otherwise a name shaped like org/name stays a hub name; anything else is a path that does not exist
 * yet, made absolute so the error names it.
 */
export function localPathOrHubName(name: string, base: string): string {
  const local = resolve(base, name);
  return !existsSync(local) && looksLikeHubName(name) ? name : local;
}

/** `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`. */
export function hubCacheDir(): string {
  if (process.env.HF_HUB_CACHE) return process.env.HF_HUB_CACHE;
  if (process.env.HF_HOME) return join(process.env.HF_HOME, 'hub');
  return join(homedir(), '.cache', 'huggingface', 'hub');
}

const offline = () => ['1', 'true', 'yes', 'on'].includes((process.env.HF_HUB_OFFLINE ?? '').toLowerCase());
const isCommit = (rev: string) => /^[0-9a-f]{40}$/.test(rev);

/** The snapshot folder of a hub model, downloading what is missing unless told not to. */
export async function resolveHubModel(name: string, options: HubOptions = {}): Promise<string> {
  const [repo, atRevision] = name.split('@');
  const revision = options.revision ?? atRevision ?? 'main';
  const [org, model] = repo.split('/');
  const repoDir = join(options.cacheDir ?? hubCacheDir(), `models--${org}--${model}`);

  const cachedCommit = isCommit(revision) ? revision : await readRef(repoDir, revision);
  if (cachedCommit) {
    const snapshot = join(repoDir, 'snapshots', cachedCommit);
    const complete = options.files === 'tokenizer' ? existsSync(join(snapshot, 'tokenizer.json')) : await snapshotIsComplete(snapshot);
    if (complete) return snapshot;
  }
  if (options.download === false || offline()) {
    const why = options.download === false ? 'downloads are off' : 'HF_HUB_OFFLINE is set';
    const state = cachedCommit ? `its snapshot ${cachedCommit} in ${repoDir} is incomplete` : `it is not in the hub cache (${repoDir})`;
    throw new UserError(`${repo}: ${state} and ${why}`);
  }
  const endpoint = (options.endpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
  const download = new HubDownload(repo, revision, endpoint, repoDir, options.quiet ?? false);
  return options.files === 'tokenizer' ? download.runTokenizer() : download.run();
}

async function readRef(repoDir: string, revision: string): Promise<string | null> {
  try {
    const commit = (await fs.readFile(join(repoDir, 'refs', revision), 'utf8')).trim();
    return isCommit(commit) ? commit : null;
  } catch {
    return null;
  }
}

/** config.json and a full set of weights (every shard an index names) are present. */
async function snapshotIsComplete(snapshot: string): Promise<boolean> {
  if (!existsSync(join(snapshot, 'config.json'))) return false;
  for (const weights of WEIGHT_FILES) {
    const path = join(snapshot, weights);
    if (!existsSync(path)) continue;
    if (!weights.endsWith('.index.json')) return true;
    try {
      const shards = new Set(parseWeightIndex(path, await fs.readFile(path, 'utf8')).values());
      return [...shards].every((shard) => existsSync(join(snapshot, shard)));
    } catch {
      return false;
    }
  }
  return false;
}

interface FileMeta {
  commit: string;
  etag: string;
  size: number | null;
  /** Where the bytes are (the redirect target for large files). */
  location: string;
}

class HubDownload {
  /** Pinned to the first commit the hub reports, so every file comes from the same revision. */
  private commit: string | null = null;

  constructor(private readonly repo: string, private readonly revision: string, private readonly endpoint: string,
    private readonly repoDir: string, private readonly quiet: boolean) {}

  async run(): Promise<string> {
    if (!(await this.fetch('config.json', true))) throw new Error('unreachable');
    for (const file of TOKENIZER_FILES) await this.fetch(file, false);
    let found = false;
    for (const weights of WEIGHT_FILES) {
      const path = await this.fetch(weights, false);
      if (!path) continue;
      found = true;
      if (weights.endsWith('.index.json')) {
        const shards = new Set(parseWeightIndex(path, await fs.readFile(path, 'utf8')).values());
        for (const shard of shards) await this.fetch(shard, true);
      }
      break;
    }
    if (!found) throw new UserError(`${this.repo}: the repository has no weights (looked for ${WEIGHT_FILES.join(', ')})`);
    await this.writeRef();
    return this.snapshotDir();
  }

  /** Only the tokenizer files (for a model whose config names its tokenizer's repository). */
  async runTokenizer(): Promise<string> {
    await this.fetch('tokenizer.json', true);
    for (const file of TOKENIZER_FILES.slice(1)) await this.fetch(file, false);
    await this.writeRef();
    return this.snapshotDir();
  }

  private async writeRef(): Promise<void> {
    if (isCommit(this.revision)) return;
    await fs.mkdir(join(this.repoDir, 'refs'), { recursive: true });
    await writeFileAtomic(join(this.repoDir, 'refs', this.revision), this.commit!);
  }

  private snapshotDir(): string {
    return join(this.repoDir, 'snapshots', this.commit!);
  }

  private url(file: string): string {
    const rev = encodeURIComponent(this.commit ?? this.revision);
    return `${this.endpoint}/${this.repo}/resolve/${rev}/${file.split('/').map(encodeURIComponent).join('/')}`;
  }

  /** Make `file` present in the snapshot; returns its path, or null when the repo has no such file and it is optional. */
  private async fetch(file: string, required: boolean): Promise<string | null> {
    if (this.commit) {
      const existing = join(this.snapshotDir(), file);
      if (existsSync(existing)) return existing; // a commit's files never change
    }
    const meta = await this.head(file, required);
    if (!meta) return null;
    if (this.commit === null) this.commit = meta.commit;
    const blob = join(this.repoDir, 'blobs', meta.etag);
    if (!existsSync(blob)) await this.downloadBlob(file, meta, blob);
    const target = join(this.snapshotDir(), file);
    await fs.mkdir(dirname(target), { recursive: true });
    await fs.rm(target, { force: true });
    try {
      await fs.symlink(relative(dirname(target), blob), target);
    } catch {
      await fs.copyFile(blob, target); // file systems without symlinks: a plain file, as huggingface_hub does
    }
    return target;
  }

  /** The hub's metadata without following the redirect: commit, ETag (X-Linked-Etag for large files), size. */
  private async head(file: string, required: boolean): Promise<FileMeta | null> {
    let url = this.url(file);
    let response = await this.request(url, { method: 'HEAD', redirect: 'manual' });
    // A renamed repository answers with a relative redirect to its new name, before any file metadata:
    // follow those (as huggingface_hub does) but stop at the first answer that carries the commit.
    for (let hops = 0; hops < 5 && isRedirect(response.status) && !response.headers.get('x-repo-commit'); hops++) {
      const location = response.headers.get('location');
      if (!location) break;
      url = new URL(location, url).toString();
      response = await this.request(url, { method: 'HEAD', redirect: 'manual' });
    }
    const errorCode = response.headers.get('x-error-code');
    if (response.status === 404 || response.status === 401 || response.status === 403) {
      if (errorCode === 'RepoNotFound' || (response.status !== 404 && file === 'config.json')) {
        throw new UserError(`${this.repo}: repository not found on ${this.endpoint} (HTTP ${response.status}); check the name (private and gated repositories are not supported)`);
      }
      if (errorCode === 'RevisionNotFound') throw new UserError(`${this.repo}: revision ${this.revision} not found on ${this.endpoint}`);
      if (!required) return null;
      throw new UserError(`${this.repo}: ${file} not found at revision ${this.commit ?? this.revision} on ${this.endpoint} (HTTP ${response.status})${file === 'config.json' ? '; is the repository name right?' : ''}`);
    }
    if (response.status >= 400) throw new UserError(`${this.repo}: ${url} answered HTTP ${response.status}`);
    const commit = response.headers.get('x-repo-commit');
    const rawEtag = response.headers.get('x-linked-etag') ?? response.headers.get('etag');
    if (!commit || !isCommit(commit)) throw new UserError(`${this.repo}: ${url} gave no X-Repo-Commit header; is ${this.endpoint} a Hugging Face hub?`);
    if (!rawEtag) throw new UserError(`${this.repo}: ${url} gave no ETag header; is ${this.endpoint} a Hugging Face hub?`);
    if (this.commit && commit !== this.commit) throw new UserError(`${this.repo}: the repository changed during the download (commit ${this.commit}, now ${commit}); run again`);
    const sizeHeader = response.headers.get('x-linked-size') ?? (response.status < 300 ? response.headers.get('content-length') : null);
    const location = isRedirect(response.status) ? response.headers.get('location') : null;
    return {
      commit,
      etag: blobName(rawEtag),
      size: sizeHeader !== null && /^\d+$/.test(sizeHeader) ? Number(sizeHeader) : null,
      location: location ? new URL(location, url).toString() : url,
    };
  }

  /**
   * Fetch into `blobs/ETAG.incomplete`, continuing a partial file with a Range request (also after a
   * dropped connection, a few times), then rename into place: a blob exists only when complete.
   */
  private async downloadBlob(file: string, meta: FileMeta, blob: string): Promise<void> {
    await fs.mkdir(dirname(blob), { recursive: true });
    const partial = `${blob}.incomplete`;
    const progress = new Progress({ label: file, total: meta.size ?? undefined, unit: 'bytes', quiet: this.quiet });
    for (let attempt = 0; ; attempt++) {
      try {
        await this.downloadOnce(meta, partial, progress);
        break;
      } catch (error) {
        if (error instanceof UserError || attempt >= RETRIES) {
          throw error instanceof UserError ? error : new UserError(`${this.repo}: downloading ${file} failed (${describe(error)}); run again to resume`, { cause: error });
        }
        await new Promise((r) => setTimeout(r, 200 * (attempt + 1)));
      }
    }
    progress.finish();
    const { size } = await fs.stat(partial);
    if (meta.size !== null && size !== meta.size) {
      throw new UserError(`${this.repo}: ${file} downloaded ${size} bytes, expected ${meta.size}; run again to resume`);
    }
    await fs.rename(partial, blob);
  }

  private async downloadOnce(meta: FileMeta, partial: string, progress: Progress): Promise<void> {
    let have = (await fs.stat(partial).catch(() => null))?.size ?? 0;
    if (meta.size !== null && have > meta.size) { await fs.rm(partial); have = 0; }
    if (meta.size !== null && have === meta.size) return;
    const headers: Record<string, string> = { 'accept-encoding': 'identity' };
    if (have > 0) headers.range = `bytes=${have}-`;
    const response = await this.request(meta.location, { headers });
    if (response.status === 416) { // our partial is stale or longer than the file: start over
      await response.body?.cancel();
      await fs.rm(partial, { force: true });
      throw new Error('range not satisfiable, restarting');
    }
    if (response.status !== 200 && response.status !== 206) {
      await response.body?.cancel();
      throw new UserError(`${this.repo}: ${meta.location} answered HTTP ${response.status}`);
    }
    let start = 0;
    if (response.status === 206) {
      const range = /^bytes (\d+)-/.exec(response.headers.get('content-range') ?? '');
      if (!range || Number(range[1]) !== have) { await response.body?.cancel(); throw new Error('the server resumed at the wrong offset'); }
      start = have;
    } // a 200 to a Range request means the server sends everything again
    const handle = await fs.open(partial, start > 0 ? 'r+' : 'w');
    let position = start;
    progress.set(position);
    try {
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        let done = 0;
        while (done < chunk.byteLength) {
          const { bytesWritten } = await handle.write(chunk, done, chunk.byteLength - done, position);
          done += bytesWritten;
          position += bytesWritten;
        }
        progress.set(position);
      }
      await handle.truncate(position);
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  private async request(url: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(url, init);
    } catch (error) {
      throw new UserError(`${this.repo}: cannot reach ${new URL(url).origin} (${describe(error)})`, { cause: error });
    }
  }
}

const isRedirect = (status: number) => status >= 300 && status < 400;

/** ETags become file names: strip W/ and quotes; anything unusual is hashed so it stays a safe name. */
function blobName(etag: string): string {
  const bare = etag.replace(/^W\//, '').replace(/^"|"$/g, '');
  return /^[A-Za-z0-9_.-]+$/.test(bare) && !bare.startsWith('.') ? bare : createHash('sha256').update(bare).digest('hex');
}

function describe(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (error as Error).message ?? String(error);
}
