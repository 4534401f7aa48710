import { FormatError } from '../util/errors.js';
import { BYTE_TO_CHAR } from './byte-level.js';

/**
 * Merge ranks keyed by a pair of token ids, in an open-addressing hash table over typed arrays: a
 * Map keyed by `a * n + b` would box most keys as doubles, and this lookup is the BPE inner loop.
 */
class PairTable {
  private readonly mask: number;
  private readonly left: Int32Array;
  private readonly right: Int32Array;
  private readonly value: Int32Array;

  constructor(count: number) {
    let capacity = 16;
    while (capacity < count * 2) capacity *= 2;
    this.mask = capacity - 1;
    this.left = new Int32Array(capacity).fill(-1);
    this.right = new Int32Array(capacity);
    this.value = new Int32Array(capacity);
  }

  private slot(a: number, b: number): number {
    return (Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca77)) >>> 0;
  }

  /** Later entries overwrite earlier ones, as in Hugging Face (it collects the merges into a HashMap). */
  set(a: number, b: number, v: number): void {
    let i = this.slot(a, b) & this.mask;
    while (this.left[i] !== -1 && (this.left[i] !== a || this.right[i] !== b)) i = (i + 1) & this.mask;
    this.left[i] = a;
    this.right[i] = b;
    this.value[i] = v;
  }

  /** The value for (a, b), or -1. */
  get(a: number, b: number): number {
    let i = this.slot(a, b) & this.mask;
    for (;;) {
      const l = this.left[i];
      if (l === -1) return -1;
      if (l === a && this.right[i] === b) return this.value[i];
      i = (i + 1) & this.mask;
    }
  }
}

/** Words of up to this many bytes use the simple merge loop, longer ones the heap. */
const SHORT_WORD = 32;
/** "No merge" in the short loop: above every real rank. */
const NONE = 0x7fffffff;

/**
 * Byte-level BPE: a word's UTF-8 bytes start as one token each and the adjacent pair with the lowest
 * merge rank is merged, leftmost first among equal ranks, until no pair has a rank. This is the order
 * Hugging Face's priority queue of (rank, position) produces. Long words (minified code, long runs
 * of punctuation) go through a heap, so they stay O(n log n).
 */
export class BytePairEncoder {
  /** Token id of each single byte. */
  readonly byteIds: Int32Array;
  private readonly ranks: PairTable;
  private readonly mergedId: Int32Array; // by rank

  // Scratch buffers, grown on demand and reused (a tokenizer is used by one thread).
  private sym = new Int32Array(64);
  private prev = new Int32Array(64);
  private next = new Int32Array(64);
  // Each merge pushes at most two new candidates, so the heap never holds more than 3n entries.
  private heapRank = new Int32Array(3 * 64);
  private heapPos = new Int32Array(3 * 64);

  constructor(file: string, vocab: Map<string, number>, merges: ReadonlyArray<readonly [string, string]>) {
    // Bytes 0xC0, 0xC1 and 0xF5..0xFF never occur in UTF-8, and GPT-NeoX's vocabulary leaves them out;
    // every other byte needs a token or some text could not be encoded at all.
    this.byteIds = new Int32Array(256).fill(-1);
    for (let b = 0; b < 256; b++) {
      const id = vocab.get(BYTE_TO_CHAR[b]);
      if (id !== undefined) this.byteIds[b] = id;
      else if (!(b === 0xc0 || b === 0xc1 || b >= 0xf5)) {
        throw new FormatError(file, `model.vocab has no token for byte 0x${b.toString(16)} (${JSON.stringify(BYTE_TO_CHAR[b])}): not a byte-level BPE vocabulary`);
      }
    }
    this.ranks = new PairTable(merges.length);
    this.mergedId = new Int32Array(merges.length);
    merges.forEach(([a, b], rank) => {
      // readTokenizerFile checked that a, b and a+b are all in the vocabulary.
      this.ranks.set(vocab.get(a)!, vocab.get(b)!, rank);
      this.mergedId[rank] = vocab.get(a + b)!;
    });
  }

  private grow(n: number): void {
    if (n <= this.sym.length) return;
    let size = this.sym.length;
    while (size < n) size *= 2;
    this.sym = new Int32Array(size);
    this.prev = new Int32Array(size);
    this.next = new Int32Array(size);
    this.heapRank = new Int32Array(3 * size);
    this.heapPos = new Int32Array(3 * size);
  }

  /** BPE over `n` bytes in bytes[0..n); returns the resulting token ids. */
  encodeBytes(bytes: Uint8Array, n: number): Int32Array {
    if (n === 0) return new Int32Array(0);
    this.grow(n);
    return n <= SHORT_WORD ? this.mergeShort(bytes, n) : this.mergeLong(bytes, n);
  }

  /**
   * Short words (nearly all of them): keep the symbols and the ranks of adjacent pairs in arrays, scan
   * for the lowest rank (the first one on ties), merge, shift the rest left. O(n²), but with no heap
   * to maintain it is the faster way for a handful of symbols.
   */
  private mergeShort(bytes: Uint8Array, n: number): Int32Array {
    const { sym, ranks, mergedId, byteIds } = this;
    const pairRank = this.prev; // scratch: pairRank[k] = rank of (sym[k], sym[k + 1]), or NONE
    for (let i = 0; i < n; i++) sym[i] = byteIds[bytes[i]];
    for (let i = 0; i + 1 < n; i++) {
      const r = ranks.get(sym[i], sym[i + 1]);
      pairRank[i] = r >= 0 ? r : NONE;
    }
    let m = n;
    for (;;) {
      let best = -1;
      let bestRank = NONE;
      for (let k = 0; k + 1 < m; k++) {
        if (pairRank[k] < bestRank) { bestRank = pairRank[k]; best = k; }
      }
      if (best < 0) break;
      sym[best] = mergedId[bestRank];
      for (let k = best + 1; k + 1 < m; k++) { sym[k] = sym[k + 1]; pairRank[k] = pairRank[k + 1]; }
      m--;
      if (best > 0) {
        const r = ranks.get(sym[best - 1], sym[best]);
        pairRank[best - 1] = r >= 0 ? r : NONE;
      }
      if (best + 1 < m) {
        const r = ranks.get(sym[best], sym[best + 1]);
        pairRank[best] = r >= 0 ? r : NONE;
      }
    }
    return sym.slice(0, m);
  }

  /**
   * Long words: a linked list of symbols and a binary min-heap of candidate merges ordered by
   * (rank, position), as Hugging Face does; entries made stale by an earlier merge are skipped when
   * popped. O(n log n).
   */
  private mergeLong(bytes: Uint8Array, n: number): Int32Array {
    const { sym, prev, next, ranks, mergedId, byteIds } = this;
    for (let i = 0; i < n; i++) {
      sym[i] = byteIds[bytes[i]];
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    this.heapSize = 0;
    for (let i = 0; i + 1 < n; i++) {
      const rank = ranks.get(sym[i], sym[i + 1]);
      if (rank >= 0) this.heapPush(rank, i);
    }
    let count = n;
    while (this.heapSize > 0) {
      const rank = this.heapRank[0];
      const pos = this.heapPos[0];
      this.heapPop();
      // Skip stale entries: the left symbol was merged away, or the pair at pos changed since.
      if (sym[pos] < 0) continue;
      const right = next[pos];
      if (right < 0 || ranks.get(sym[pos], sym[right]) !== rank) continue;

      sym[pos] = mergedId[rank];
      sym[right] = -1;
      const after = next[right];
      next[pos] = after;
      if (after >= 0) prev[after] = pos;
      count--;
      const before = prev[pos];
      if (before >= 0) {
        const r = ranks.get(sym[before], sym[pos]);
        if (r >= 0) this.heapPush(r, before);
      }
      if (after >= 0) {
        const r = ranks.get(sym[pos], sym[after]);
        if (r >= 0) this.heapPush(r, pos);
      }
    }

    const out = new Int32Array(count);
    for (let i = 0, k = 0; i >= 0; i = next[i]) out[k++] = sym[i];
    return out;
  }

  private heapSize = 0;

  private heapLess(i: number, j: number): boolean {
    const a = this.heapRank[i];
    const b = this.heapRank[j];
    return a < b || (a === b && this.heapPos[i] < this.heapPos[j]);
  }

  private heapSwap(i: number, j: number): void {
    const { heapRank, heapPos } = this;
    const r = heapRank[i]; heapRank[i] = heapRank[j]; heapRank[j] = r;
    const p = heapPos[i]; heapPos[i] = heapPos[j]; heapPos[j] = p;
  }

  private heapPush(rank: number, pos: number): void {
    let i = this.heapSize++;
    this.heapRank[i] = rank;
    this.heapPos[i] = pos;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.heapLess(i, parent)) break;
      this.heapSwap(i, parent);
      i = parent;
    }
  }

  private heapPop(): void {
    const size = --this.heapSize;
    this.heapRank[0] = this.heapRank[size];
    this.heapPos[0] = this.heapPos[size];
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= size) break;
      const smaller = l + 1 < size && this.heapLess(l + 1, l) ? l + 1 : l;
      if (!this.heapLess(smaller, i)) break;
      this.heapSwap(i, smaller);
      i = smaller;
    }
  }
}
