/**
 * `mpt bench tokenize`: our tokenizer's throughput (one thread, and a worker pool over every core)
 * side by side with Hugging Face tokenizers' `encodeBatch` (the Rust core, npm `tokenizers`, installed
 * into a scratch folder, never a dependency of mpt-ts) on the same ≥ 20 MB of real text, after
 * checking that all three give identical ids.
 *
 * Every round starts cold for every system (a fresh tokenizer: empty word caches), and the rounds
 * alternate between systems so that noise from other processes hits them alike; the table shows the
 * best round of each (the least disturbed) and the median.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../util/errors.js';
import { Tokenizer, TokenizerPool } from '../tokenizer/index.js';

const HF_VERSION = '0.23.2';
const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export interface TokenizeBenchOptions {
  /** Text files to tokenize (default: every text file of this project's node_modules and Node's global ones). */
  files?: string[];
  /** Refuse to run on less text than this (default 20 MB). */
  minBytes?: number;
  /** A folder holding node_modules/tokenizers; default a scratch folder where it is installed if missing. */
  hfTokenizersDir?: string;
  /** The tokenizer.json (default: the fixtures' GPT-NeoX-20B tokenizer). */
  tokenizerJson?: string;
  /** Worker threads for the parallel row (default: one per core). */
  threads?: number;
  /** Rounds per system (default 3). */
  rounds?: number;
  /** Print the table to stdout (default true). */
  print?: boolean;
}

export interface TokenizeBenchRow {
  system: string;
  threads: number;
  bestSeconds: number;
  medianSeconds: number;
  mbPerSec: number; // from the best round
  tokensPerSec: number; // from the best round
}

export interface TokenizeBenchResult {
  files: number;
  bytes: number;
  tokens: number;
  identical: true; // a mismatch throws instead
  cpus: string;
  hfVersion: string;
  poolStartSeconds: number;
  rows: TokenizeBenchRow[];
  table: string;
}

/** Regular files under dir that look like text (no NUL byte), smaller than 8 MB. */
function textFilesUnder(dir: string, out: string[] = []): string[] {
  if (!existsSync(dir)) return out;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.')) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) textFilesUnder(p, out);
    else if (e.isFile()) out.push(p);
  }
  return out;
}

function defaultFiles(): string[] {
  // Node's own global packages (npm, corepack: JavaScript and Markdown) sit next to its binary.
  const globalModules = join(dirname(dirname(process.execPath)), 'lib', 'node_modules');
  return [...textFilesUnder(join(projectRoot, 'node_modules')), ...textFilesUnder(globalModules)].sort();
}

/** Loads npm `tokenizers` from dir, installing it there first when it is missing. */
function loadHfTokenizers(dir: string | undefined): { Tokenizer: any; version: string } {
  const folder = dir ?? join(tmpdir(), `mpt-hf-tokenizers-${HF_VERSION}`);
  if (!existsSync(join(folder, 'node_modules', 'tokenizers', 'package.json'))) {
    if (dir) throw new UserError(`${dir} has no node_modules/tokenizers (install it with: npm install --prefix ${dir} tokenizers@${HF_VERSION})`);
    process.stderr.write(`installing Hugging Face tokenizers ${HF_VERSION} into ${folder} (for comparison only)\n`);
    try {
      execFileSync('npm', ['install', '--no-save', '--prefix', folder, `tokenizers@${HF_VERSION}`], { stdio: ['ignore', 'ignore', 'inherit'] });
    } catch (e) {
      throw new UserError(`could not install npm tokenizers@${HF_VERSION} into ${folder} (${(e as Error).message}); install it yourself and pass its folder`);
    }
  }
  const require = createRequire(join(folder, 'package.json'));
  return { Tokenizer: require('tokenizers').Tokenizer, version: require('tokenizers/package.json').version };
}

function sameIds(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function benchTokenize(options: TokenizeBenchOptions = {}): Promise<TokenizeBenchResult> {
  const minBytes = options.minBytes ?? 20e6;
  const rounds = options.rounds ?? 3;
  const threads = options.threads ?? availableParallelism();
  const tokenizerJson = options.tokenizerJson ?? join(projectRoot, '..', 'shared', 'fixtures', 'mosaic-gpt-tiny', 'tokenizer.json');
  if (!existsSync(tokenizerJson)) throw new UserError(`tokenizer file ${tokenizerJson} not found (pass tokenizerJson)`);

  const files: string[] = [];
  const texts: string[] = [];
  let bytes = 0;
  for (const file of options.files ?? defaultFiles()) {
    let data: Buffer;
    try {
      data = readFileSync(file);
    } catch (e) {
      throw new UserError(`cannot read ${file}: ${(e as Error).message}`);
    }
    if (data.length === 0 || data.length >= 8e6 || data.includes(0)) {
      if (options.files) throw new UserError(`${file} is empty, over 8 MB or not text`);
      continue;
    }
    files.push(file);
    texts.push(data.toString('utf8'));
    bytes += data.length;
  }
  if (bytes < minBytes) {
    throw new UserError(`only ${(bytes / 1e6).toFixed(1)} MB of text in ${files.length} files; the benchmark needs ${(minBytes / 1e6).toFixed(0)} MB (pass more files)`);
  }

  const hf = loadHfTokenizers(options.hfTokenizersDir);
  const times: Record<'single' | 'pool' | 'hf', number[]> = { single: [], pool: [], hf: [] };
  let poolStart = Infinity;
  let tokens = 0;
  for (let round = 0; round < rounds; round++) {
    // Ours, one thread, fresh tokenizer.
    const single = Tokenizer.fromFile(tokenizerJson);
    let t = performance.now();
    const ours = texts.map((text) => single.encode(text));
    times.single.push((performance.now() - t) / 1000);

    // Ours, worker pool: start-up (loading the tokenizer in every worker) is timed apart.
    t = performance.now();
    const pool = await TokenizerPool.open(tokenizerJson, { threads });
    const started = performance.now();
    poolStart = Math.min(poolStart, (started - t) / 1000);
    let parallel: Uint32Array[];
    try {
      parallel = await pool.encodeBatchTyped(texts);
      times.pool.push((performance.now() - started) / 1000);
    } finally {
      await pool.close();
    }

    // Hugging Face, encodeBatch over its own thread pool, fresh tokenizer.
    const theirs = hf.Tokenizer.fromFile(tokenizerJson);
    t = performance.now();
    const encodings = await theirs.encodeBatch(texts, { addSpecialTokens: false });
    times.hf.push((performance.now() - t) / 1000);

    if (round === 0) {
      for (let i = 0; i < texts.length; i++) {
        const expected: number[] = encodings[i].getIds();
        if (!sameIds(ours[i], expected) || !sameIds(parallel[i], expected)) {
          throw new Error(`ids differ from Hugging Face tokenizers on ${files[i]} (a tokenizer bug: please report it)`);
        }
        tokens += expected.length;
      }
    }
  }

  const row = (system: string, n: number, secs: number[]): TokenizeBenchRow => {
    const best = Math.min(...secs);
    return { system, threads: n, bestSeconds: best, medianSeconds: median(secs), mbPerSec: bytes / 1e6 / best, tokensPerSec: tokens / best };
  };
  const hfThreads = Number(process.env.RAYON_NUM_THREADS) || availableParallelism();
  const rows = [
    row('mpt-ts Tokenizer.encode', 1, times.single),
    row('mpt-ts TokenizerPool.encodeBatch', threads, times.pool),
    row(`HF tokenizers ${hf.version} encodeBatch`, hfThreads, times.hf),
  ];
  const hfRate = rows[2].mbPerSec;
  const lines = [
    `${files.length} files, ${(bytes / 1e6).toFixed(1)} MB, ${tokens.toLocaleString('en-US')} tokens; ids identical in all three; ` +
      `${availableParallelism()} × ${cpus()[0]?.model ?? 'cpu'}; best of ${rounds} cold rounds`,
    '',
    '| system | threads | MB/s | M tokens/s | best s | median s | vs HF |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...rows.map((r) => `| ${r.system} | ${r.threads} | ${r.mbPerSec.toFixed(2)} | ${(r.tokensPerSec / 1e6).toFixed(2)} | ` +
      `${r.bestSeconds.toFixed(2)} | ${r.medianSeconds.toFixed(2)} | ${(r.mbPerSec / hfRate).toFixed(2)}× |`),
    '',
    `pool start-up (workers loading tokenizer.json), not included above: ${poolStart.toFixed(2)} s`,
  ];
  const table = lines.join('\n');
  if (options.print ?? true) process.stdout.write(table + '\n');
  return {
    files: files.length, bytes, tokens, identical: true, cpus: `${availableParallelism()} × ${cpus()[0]?.model ?? 'cpu'}`,
    hfVersion: hf.version, poolStartSeconds: poolStart, rows, table,
  };
}
