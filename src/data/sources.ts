import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { UserError } from '../util/errors.js';
import type { InputFile } from './manifest.js';
import { inputFormat } from './read-documents.js';

/**
 * The input layout, as RedPajama ships it: one folder per source under a root, holding JSONL
 * (plain, .gz, .zst) or plain-text files, in sub-folders or not.
 */
export const REDPAJAMA_SOURCES = ['common_crawl', 'c4', 'github', 'wikipedia', 'book', 'arxiv', 'stackexchange'] as const;

export interface InputListing {
  root: string;
  /** Every input file, sorted by source then path: the order documents are packed in. */
  files: InputFile[];
  sources: string[];
  /** Files in source folders that are not inputs (by extension), so they are not ignored silently. */
  ignored: string[];
}

/**
 * Lists the sources under `root` (every sub-folder is a source; `only` restricts to those named) and
 * their input files. A source with no input file is an error that names it.
 */
export async function listInputs(root: string, only?: string[]): Promise<InputListing> {
  let entries;
  try {
    entries = await fs.readdir(root, { withFileTypes: true });
  } catch (error) {
    throw new UserError(`cannot read the input folder ${root}: ${(error as Error).message}`);
  }
  let sources = entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name).sort();
  if (only && only.length > 0) {
    const missing = only.filter((s) => !sources.includes(s));
    if (missing.length > 0) throw new UserError(`${root}: no source folder named ${missing.join(', ')} (found: ${sources.join(', ') || 'none'})`);
    sources = sources.filter((s) => only.includes(s));
  }
  if (sources.length === 0) throw new UserError(`${root}: no source folders found (expected one folder per source, e.g. ${REDPAJAMA_SOURCES.slice(0, 3).join(', ')})`);
  const files: InputFile[] = [];
  const ignored: string[] = [];
  for (const source of sources) {
    const found = await walk(join(root, source));
    let count = 0;
    for (const path of found) {
      const rel = relative(root, path).split(sep).join('/');
      if (!inputFormat(path)) {
        ignored.push(rel);
        continue;
      }
      const bytes = (await fs.stat(path)).size;
      files.push({ source, path: rel, bytes });
      count++;
    }
    if (count === 0) throw new UserError(`source ${source} (${join(root, source)}) is empty: no .jsonl, .jsonl.gz, .jsonl.zst or .txt files in it`);
  }
  files.sort(compareInputs);
  return { root, files, sources, ignored };
}

/** The listing's order: by source, then by path (plain code-unit order, the same on every machine). */
export function compareInputs(a: InputFile, b: InputFile): number {
  if (a.source !== b.source) return a.source < b.source ? -1 : 1;
  return a.path < b.path ? -1 : a.path > b.path ? 1 : 0;
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  const entries = await fs.readdir(dir, { withFileTypes: true });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    const path = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(path)));
    else if (e.isFile()) out.push(path);
  }
  return out;
}

/** A digest of the listing (paths and sizes) that every part of a sharded run must agree on. */
export function listingDigest(files: InputFile[]): string {
  const h = createHash('sha256');
  for (const f of files) h.update(`${f.source}\0${f.path}\0${f.bytes}\n`);
  return h.digest('hex');
}

/** Parses `--shard i/N` (0-based i). */
export function parseShardSpec(text: string): { index: number; count: number } {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  const index = m ? Number(m[1]) : NaN, count = m ? Number(m[2]) : NaN;
  if (!m || count < 1 || index >= count) throw new UserError(`--shard must be i/N with 0 ≤ i < N (e.g. 3/8), got "${text}"`);
  return { index, count };
}

/**
 * Which files part `index` of `count` prepares: every machine computes the same assignment from the
 * same listing with no coordination. Files go, largest first (ties by path), to the part with the
 * fewest bytes so far (ties to the lowest index), so parts get similar work; within a part the
 * files keep the listing's order.
 */
export function assignFiles(files: InputFile[], count: number): InputFile[][] {
  const parts: InputFile[][] = Array.from({ length: count }, () => []);
  const load = new Array<number>(count).fill(0);
  const order = files.map((f, i) => ({ f, i })).sort((a, b) => b.f.bytes - a.f.bytes || (a.f.path < b.f.path ? -1 : a.f.path > b.f.path ? 1 : 0));
  const owner = new Array<number>(files.length);
  for (const { f, i } of order) {
    let best = 0;
    for (let p = 1; p < count; p++) if (load[p]! < load[best]!) best = p;
    owner[i] = best;
    load[best]! += Math.max(f.bytes, 1);
  }
  files.forEach((f, i) => parts[owner[i]!]!.push(f));
  return parts;
}
