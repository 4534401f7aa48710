/**
 * `mpt bench tokenize`: our tokenizer's throughput (one thread, and a worker pool over every core)
 * side by side with Hugging Face tokenizers' `encodeBatch` (the Rust core, npm `tokenizers`, installed
 * into a scratch folder, never a dependency of mpt-ts) on the same ≥ 20 MB of real text, after
 * checking that all three give identical ids.
 *
 * Every round gives each system a fresh tokenizer and times two passes over the text: cold (empty
 * word caches) and warm (caches filled, as after the first few MB of a long tokenizing job). Rounds
 * alternate between the systems so that noise from other processes hits them alike; the table shows
 * each system's best round (the least disturbed).
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
  /** Best round's first pass over the text with a fresh tokenizer (empty caches), in seconds. */
  coldSeconds: number;
  /** Best round's second pass with the same tokenizer (its caches filled), in seconds. */
  warmSeconds: number;
  coldMBps: number;
  warmMBps: number;
  coldTokensPerSec: number;
  warmTokensPerSec: number;
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
  type System = 'single' | 'pool' | 'hf';
  const cold: Record<System, number[]> = { single: [], pool: [], hf: [] };
  const warm: Record<System, number[]> = { single: [], pool: [], hf: [] };
  const seconds = (since: number) => (performance.now() - since) / 1000;
  let poolStart = Infinity;
  let tokens = 0;
  for (let round = 0; round < rounds; round++) {
    // Ours, one thread.
    const single = Tokenizer.fromFile(tokenizerJson);
    let t = performance.now();
    const ours = texts.map((text) => single.encode(text));
    cold.single.push(seconds(t));
    t = performance.now();
    for (const text of texts) single.encode(text);
    warm.single.push(seconds(t));

    // Ours, worker pool: start-up (every worker loading the tokenizer) is timed apart.
    t = performance.now();
    const pool = await TokenizerPool.open(tokenizerJson, { threads });
    let parallel: Uint32Array[];
    try {
      await pool.encodeBatchTyped(['warm up the workers']); // wait until every worker has loaded
      poolStart = Math.min(poolStart, seconds(t));
      t = performance.now();
      parallel = await pool.encodeBatchTyped(texts);
      cold.pool.push(seconds(t));
      t = performance.now();
      await pool.encodeBatchTyped(texts);
      warm.pool.push(seconds(t));
    } finally {
      await pool.close();
    }

    // Hugging Face, encodeBatch over its own thread pool (all cores unless RAYON_NUM_THREADS says).
    const theirs = hf.Tokenizer.fromFile(tokenizerJson);
    t = performance.now();
    const encodings = await theirs.encodeBatch(texts, { addSpecialTokens: false });
    cold.hf.push(seconds(t));
    t = performance.now();
    await theirs.encodeBatch(texts, { addSpecialTokens: false });
    warm.hf.push(seconds(t));

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

  const row = (system: string, n: number, key: System): TokenizeBenchRow => {
    const c = Math.min(...cold[key]);
    const w = Math.min(...warm[key]);
    return {
      system, threads: n, coldSeconds: c, warmSeconds: w, coldMBps: bytes / 1e6 / c, warmMBps: bytes / 1e6 / w,
      coldTokensPerSec: tokens / c, warmTokensPerSec: tokens / w,
    };
  };
  const hfThreads = Number(process.env.RAYON_NUM_THREADS) || availableParallelism();
  const rows = [
    row('mpt-ts Tokenizer.encode', 1, 'single'),
    row('mpt-ts TokenizerPool.encodeBatchTyped', threads, 'pool'),
    row(`HF tokenizers ${hf.version} encodeBatch`, hfThreads, 'hf'),
  ];
  const [hfCold, hfWarm] = [rows[2].coldMBps, rows[2].warmMBps];
  const cpu = `${availableParallelism()} × ${cpus()[0]?.model ?? 'cpu'}`;
  const lines = [
    `${files.length} files, ${(bytes / 1e6).toFixed(1)} MB, ${tokens.toLocaleString('en-US')} tokens; ids identical in all three; ` +
      `${cpu}; best of ${rounds} rounds`,
    'cold = first pass with a fresh tokenizer (empty word caches); warm = second pass with the same one',
    '',
    '| system | threads | cold MB/s | cold M tok/s | warm MB/s | warm M tok/s | cold vs HF | warm vs HF |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows.map((r) => `| ${r.system} | ${r.threads} | ${r.coldMBps.toFixed(2)} | ${(r.coldTokensPerSec / 1e6).toFixed(2)} | ` +
      `${r.warmMBps.toFixed(2)} | ${(r.warmTokensPerSec / 1e6).toFixed(2)} | ${(r.coldMBps / hfCold).toFixed(2)}× | ${(r.warmMBps / hfWarm).toFixed(2)}× |`),
    '',
    `pool start-up (workers loading tokenizer.json), not included above: ${poolStart.toFixed(2)} s`,
  ];
  const table = lines.join('\n');
  if (options.print ?? true) process.stdout.write(table + '\n');
  return {
    files: files.length, bytes, tokens, identical: true, cpus: cpu,
    hfVersion: hf.version, poolStartSeconds: poolStart, rows, table,
  };
}
