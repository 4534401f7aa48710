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

/**
 * Byte-level BPE: a word's UTF-8 bytes start as one token each and the adjacent pair with the lowest
 * merge rank is merged, leftmost first among equal ranks, until no pair has a rank. This is the order
 * Hugging Face's priority queue of (rank, position) produces. A heap over a linked list keeps long
 * words (minified code, long runs of punctuation) O(n log n).
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
    const { sym, prev, next, heapRank, heapPos, ranks, mergedId } = this;
    for (let i = 0; i < n; i++) {
      sym[i] = this.byteIds[bytes[i]];
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }

    // Binary min-heap of candidate merges ordered by (rank, position).
    let size = 0;
    const less = (i: number, j: number) =>
      heapRank[i] < heapRank[j] || (heapRank[i] === heapRank[j] && heapPos[i] < heapPos[j]);
    const swap = (i: number, j: number) => {
      const r = heapRank[i]; heapRank[i] = heapRank[j]; heapRank[j] = r;
      const p = heapPos[i]; heapPos[i] = heapPos[j]; heapPos[j] = p;
    };
    const push = (rank: number, pos: number) => {
      let i = size++;
      heapRank[i] = rank;
      heapPos[i] = pos;
      while (i > 0) {
        const parent = (i - 1) >> 1;
        if (!less(i, parent)) break;
        swap(i, parent);
        i = parent;
      }
    };
    const popTop = () => {
      size--;
      heapRank[0] = heapRank[size];
      heapPos[0] = heapPos[size];
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= size) break;
        const smaller = l + 1 < size && less(l + 1, l) ? l + 1 : l;
        if (!less(smaller, i)) break;
        swap(i, smaller);
        i = smaller;
      }
    };

    for (let i = 0; i + 1 < n; i++) {
      const rank = ranks.get(sym[i], sym[i + 1]);
      if (rank >= 0) push(rank, i);
    }
    let count = n;
    while (size > 0) {
      const rank = heapRank[0];
      const pos = heapPos[0];
      popTop();
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
        if (r >= 0) push(r, before);
      }
      if (after >= 0) {
        const r = ranks.get(sym[pos], sym[after]);
        if (r >= 0) push(r, pos);
      }
    }

    const out = new Int32Array(count);
    for (let i = 0, k = 0; i >= 0; i = next[i]) out[k++] = sym[i];
    return out;
  }
}
