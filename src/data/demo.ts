import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';
import { writeFileAtomic } from '../util/atomic.js';
import { UserError } from '../util/errors.js';
import { hashString } from './hash.js';

/**
 * `mpt data demo`: a small real corpus in the RedPajama layout, assembled offline from text every
 * machine of this project has — Debian's /usr/share (documentation, manuals, man pages, FAQs) and the
 * source code of installed packages (Python's standard library, the project's node_modules). Each
 * source folder stands in for its RedPajama namesake with text of a similar kind:
 *
 *   common_crawl   HTML pages of /usr/share/doc, tags stripped (web pages)
 *   c4             README, NEWS and plain-text notes of /usr/share/doc (cleaner web-like prose)
 *   github         source code: Python's standard library and node_modules' .js/.ts
 *   wikipedia      man pages, one article per command or function (groff markup removed)
 *   book           GNU info manuals, each a whole book-length document
 *   arxiv          technical specifications and manuals (*.txt under /usr/share/doc, ≥ 8 KB)
 *   stackexchange  FAQ files, split into question-and-answer entries
 *
 * Files are picked in an order fixed by a hash of their path, up to a byte budget per source, so the
 * same machine gives the same corpus. A source that finds too little text is an error naming where it
 * looked. Output: <out>/<source>/demo.jsonl.gz, one {"text", "origin"} object a line.
 */
export interface DemoOptions {
  output: string;
  /** Text bytes per source (default 2 MB). */
  bytesPerSource?: number;
  /** Override where sources look (tests): roots by source name. */
  roots?: Partial<Record<string, string[]>>;
  onNotice?: (message: string) => void;
}

export interface DemoResult {
  sources: Record<string, { documents: number; bytes: number; files: number; roots: string[] }>;
}

interface Collector {
  roots: string[];
  /** Whether a file (path relative to its root) is this source's kind of text. */
  accept(path: string, size: number): boolean;
  /** The documents in a file's text. */
  documents(text: string, path: string): string[];
}

const projectNodeModules = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'node_modules');
const MIN_BYTES = 32 * 1024;

function collectors(): Record<string, Collector> {
  const doc = '/usr/share/doc';
  const pythonLibs = ['/usr/lib/python3', ...listDir('/usr/lib').filter((n) => /^python3\.\d+$/.test(n)).map((n) => join('/usr/lib', n))];
  return {
    common_crawl: { roots: [doc], accept: (p) => /\.html?(\.gz)?$/i.test(p), documents: (t) => [htmlToText(t)] },
    c4: { roots: [doc], accept: (p) => /(^|\/)(README|NEWS)[^/]*$/i.test(p) && !/\.html?(\.gz)?$/i.test(p), documents: (t) => [t] },
    github: {
      roots: [...pythonLibs, projectNodeModules],
      accept: (p, size) => /\.(py|js|mjs|ts|c|h)$/.test(p) && !/\.min\.js$/.test(p) && size < 200_000,
      documents: (t) => [t],
    },
    // The thousands of generated gcloud pages (where the Cloud SDK is installed) would crowd out the rest.
    wikipedia: { roots: ['/usr/share/man'], accept: (p) => /^man[1-8]\/[^/]+\.[1-8][^/]*(\.gz)?$/.test(p) && !/\/gcloud/.test(p), documents: (t) => [manToText(t)] },
    book: { roots: ['/usr/share/info'], accept: (p) => /\.info(-\d+)?(\.gz)?$/.test(p), documents: (t) => [infoToText(t)] },
    arxiv: { roots: [doc], accept: (p, size) => /\.txt(\.gz)?$/i.test(p) && size >= 8 * 1024 / 3, documents: (t) => (t.length >= 8 * 1024 ? [t] : []) },
    stackexchange: { roots: [doc], accept: (p) => /(^|\/)[^/]*faq[^/]*$/i.test(p) && !/\.html?(\.gz)?$/i.test(p), documents: faqEntries },
  };
}

export async function buildDemoCorpus(options: DemoOptions): Promise<DemoResult> {
  const budget = options.bytesPerSource ?? 2_000_000;
  if (!(budget >= MIN_BYTES)) throw new UserError(`--mb-per-source is too small: at least ${MIN_BYTES} bytes per source`);
  const result: DemoResult = { sources: {} };
  for (const [source, collector] of Object.entries(collectors())) {
    const roots = options.roots?.[source] ?? collector.roots;
    const present = roots.filter((r) => existsSync(r));
    const files = present.flatMap((root) => walk(root).map((path) => ({ root, path })))
      .filter(({ root, path }) => collector.accept(relative(root, path), safeSize(path)))
      .sort((a, b) => hashString(a.path) - hashString(b.path) || (a.path < b.path ? -1 : 1));
    const lines: string[] = [];
    let bytes = 0, used = 0;
    for (const { path } of files) {
      if (bytes >= budget) break;
      const text = readText(path);
      if (text === undefined) continue;
      let took = false;
      for (const d of collector.documents(text, path)) {
        const clean = d.replace(/\r\n?/g, '\n').replace(/[ \t]+\n/g, '\n').replace(/\n{3,}/g, '\n\n').trim();
        if (clean.length < 200) continue;
        const room = budget - bytes;
        const body = clean.length > room ? clean.slice(0, cutPoint(clean, room)) : clean;
        if (body.length < 200) break; // the budget is spent: no stub of a document
        lines.push(JSON.stringify({ text: body, origin: path }));
        bytes += Buffer.byteLength(body);
        took = true;
        if (bytes >= budget) break;
      }
      if (took) used++;
    }
    if (bytes < MIN_BYTES) {
      throw new UserError(
        `demo source ${source}: found only ${bytes} bytes of text (need ${MIN_BYTES}) in ${roots.join(', ')}` +
          (present.length < roots.length ? ` (missing: ${roots.filter((r) => !present.includes(r)).join(', ')})` : '') +
          `; install the Debian packages or run npm ci so this text exists`,
      );
    }
    const dir = join(options.output, source);
    mkdirSync(dir, { recursive: true });
    await writeFileAtomic(join(dir, 'demo.jsonl.gz'), gzipSync(lines.join('\n') + '\n'));
    result.sources[source] = { documents: lines.length, bytes, files: used, roots: present };
  }
  return result;
}

/** Where to cut an oversized last document: a line end, else a space, never inside a surrogate pair. */
function cutPoint(text: string, room: number): number {
  for (const sep of ['\n', ' ']) {
    const at = text.lastIndexOf(sep, room);
    if (at >= room / 2) return at;
  }
  const code = text.charCodeAt(room - 1);
  return code >= 0xd800 && code <= 0xdbff ? room - 1 : room;
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function walk(dir: string): string[] {
  const out: string[] = [];
  const stack = [dir];
  while (stack.length > 0) {
    const d = stack.pop()!;
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) stack.push(p);
      else if (e.isFile()) out.push(p);
    }
  }
  return out;
}

function safeSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A file's text, gunzipped if need be; undefined for binary or non-UTF-8 files, which are skipped. */
function readText(path: string): string | undefined {
  try {
    let bytes: Uint8Array = readFileSync(path);
    if (path.endsWith('.gz')) bytes = gunzipSync(bytes);
    if (bytes.includes(0)) return undefined;
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: ' ', copy: '©', mdash: '—', ndash: '–', hellip: '…' };

export function htmlToText(html: string): string {
  return html
    .replace(/<(script|style|head)[\s\S]*?<\/\1\s*>/gi, '')
    .replace(/<!--[\s\S]*?-->/g, '')
    .replace(/<(br|\/p|\/div|\/h\d|\/li|\/tr|\/pre|\/title)\b[^>]*>/gi, '\n')
    .replace(/<[^>]+>/g, '')
    .replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (m, e: string) => {
      if (e[0] === '#') {
        const code = e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
        return code > 0 && code < 0x110000 ? String.fromCodePoint(code) : m;
      }
      return ENTITIES[e.toLowerCase()] ?? m;
    });
}

/** groff man source to readable text: request lines dropped or reduced to their words, escapes undone. */
export function manToText(source: string): string {
  const out: string[] = [];
  for (const line of source.split('\n')) {
    if (/^\.\s*\\"/.test(line) || /^'\\"/.test(line)) continue;
    const m = /^[.'](\w+)\s*(.*)$/.exec(line);
    if (m) {
      const [, request, rest] = m;
      if (request === 'SH' || request === 'SS') out.push('', unescapeGroff(rest!.replace(/"/g, '')));
      else if (/^(B|I|BI|BR|IB|IR|RB|RI|SM|SB)$/.test(request!)) out.push(unescapeGroff(rest!.replace(/"/g, '')));
      else if (request === 'PP' || request === 'P' || request === 'LP' || request === 'TP' || request === 'IP') out.push('');
      continue;
    }
    out.push(unescapeGroff(line));
  }
  return out.join('\n');
}

function unescapeGroff(s: string): string {
  return s
    .replace(/\\f(\[[^\]]*\]|\(..|.)/g, '')
    .replace(/\\[,/&:]/g, '')
    .replace(/\\\(em/g, '—').replace(/\\\(en/g, '–').replace(/\\\(bu/g, '•').replace(/\\\((lq|rq)/g, '"').replace(/\\\(aq/g, "'")
    .replace(/\\\*\(..|\\\*./g, '')
    .replace(/\\-/g, '-').replace(/\\e/g, '\\').replace(/\\ /g, ' ').replace(/\\\|/g, '').replace(/\\\^/g, '')
    .replace(/\\s[+-]?\d/g, '');
}

/** An info manual without its node headers and menus' control characters. */
export function infoToText(source: string): string {
  return source
    .split('\x1f')
    .map((node) => node.replace(/^\n?File: [^\n]*\n/, '').replace(/^Tag Table:[\s\S]*$/, '').replace(/^\x7f?End Tag Table[\s\S]*$/, ''))
    .join('\n');
}

/** A FAQ file split into entries at lines that look like numbered or Q: questions; whole if none. */
export function faqEntries(text: string, _path: string): string[] {
  const starts: number[] = [];
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if (/^\s*(Q[.:]|Q\d+[.:]|\d+(\.\d+)*[.)]\s+\S.*\?\s*$|[A-Z].*\?\s*$)/.test(line) && (i === 0 || lines[i - 1]!.trim() === '')) starts.push(i);
  });
  if (starts.length < 3) return [text];
  const entries = [lines.slice(0, starts[0]).join('\n')];
  starts.forEach((s, k) => entries.push(lines.slice(s, starts[k + 1] ?? lines.length).join('\n')));
  return entries;
}

export function demoSourceNames(): string[] {
  return Object.keys(collectors());
}
