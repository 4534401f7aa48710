import { hashWords, mix32 } from './hash.js';

/**
 * A seeded pseudo-random permutation of [0, n) that is computed index by index, never
 * materialized: a balanced Feistel network over the smallest even power of two ≥ n, with cycle
 * walking to stay inside [0, n). A source of 65 M samples would otherwise need a 260 MB table per
 * epoch; this needs a few round keys. Feistel networks are bijections for any round function, and
 * cycle walking keeps that on the sub-domain, so each epoch visits every sample exactly once.
 */
export class Permutation {
  private readonly halfBits: number;
  private readonly halfMask: number;
  private readonly halfSize: number;
  private readonly keys: Uint32Array;
  static readonly ROUNDS = 6;

  constructor(readonly n: number, keyWords: number[]) {
    if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`permutation size must be a positive integer, got ${n}`);
    const bits = Math.max(2, Math.ceil(Math.log2(n)));
    this.halfBits = Math.ceil(bits / 2);
    if (this.halfBits > 26) throw new RangeError(`permutation size ${n} is too large`);
    this.halfSize = 2 ** this.halfBits;
    this.halfMask = this.halfSize - 1;
    this.keys = Uint32Array.from({ length: Permutation.ROUNDS }, (_, r) => hashWords([...keyWords, r]));
  }

  /** The element at position i of the permutation. */
  at(i: number): number {
    if (!(i >= 0 && i < this.n)) throw new RangeError(`permutation index ${i} outside [0, ${this.n})`);
    if (this.n === 1) return 0;
    let x = i;
    do x = this.encrypt(x);
    while (x >= this.n);
    return x;
  }

  private encrypt(x: number): number {
    let left = Math.floor(x / this.halfSize);
    let right = x & this.halfMask;
    for (let r = 0; r < this.keys.length; r++) {
      const key = this.keys[r]!;
      const f = mix32(mix32(right ^ key) + key) & this.halfMask;
      const next = (left ^ f) & this.halfMask;
      left = right;
      right = next;
    }
    return left * this.halfSize + right;
  }
}
