import { hashKeyCounter, hashWords, hi32, lo32 } from './hash.js';
import { Permutation } from './permutation.js';

/**
 * Which sample of which source the mixture serves at global sample index g — a pure function of
 * (seed, g), so a run resumes at any step from the step number alone.
 *
 * - Source: an independent draw per g from a keyed hash of (seed, g), source s with probability p_s.
 * - Sample: if this is the k-th draw of s (k draws of s come before g), its epoch is ⌊k/n_s⌋ and it
 *   serves permutation_{seed,s,epoch}(k mod n_s). Within an epoch every sample of s comes exactly
 *   once; each epoch has a new permutation.
 * - k without replay: per-source counts are kept at every BLOCK-th index in a table filled on first
 *   need (a resume at sample 100 M hashes 100 M indices once, ~1–2 s), plus at most BLOCK-1 hashes.
 */
export interface Draw {
  source: number;
  /** Sample index within the source's split. */
  index: number;
  epoch: number;
}

const BLOCK = 4096;

export class MixtureSchedule {
  private readonly thresholds: Uint32Array;
  private readonly key: number;
  private readonly seedWords: number[];
  /** counts[b·S + s] = draws of s among g < b·BLOCK. */
  private counts: Float64Array;
  private blocksKnown = 1;
  private readonly permutations = new Map<number, { epoch: number; perm: Permutation }>();

  constructor(readonly probabilities: number[], readonly samplesPerSource: number[], readonly seed: number) {
    const S = probabilities.length;
    if (S === 0 || S !== samplesPerSource.length) throw new RangeError('one sample count per source is required');
    if (S > 255) throw new RangeError('at most 255 sources');
    probabilities.forEach((p, s) => {
      if (p > 0 && !(samplesPerSource[s]! > 0)) throw new RangeError(`source ${s} has probability ${p} but no samples`);
    });
    this.seedWords = [lo32(seed), hi32(seed)];
    this.key = hashWords([...this.seedWords, 0x6d697801]);
    // Cumulative thresholds on the 32-bit hash: source s when hash < thresholds[s] (and ≥ the previous).
    // The last source with p > 0 takes everything up to 2^32 so rounding never leaves a gap.
    this.thresholds = new Uint32Array(S);
    let cumulative = 0;
    const lastPositive = probabilities.reduce((last, p, s) => (p > 0 ? s : last), -1);
    for (let s = 0; s < S; s++) {
      cumulative += probabilities[s]!;
      this.thresholds[s] = s >= lastPositive ? 0xffffffff : Math.min(0xffffffff, Math.round(cumulative * 4294967296));
    }
    this.counts = new Float64Array(S * 64);
  }

  get sources(): number {
    return this.probabilities.length;
  }

  /** The source drawn at global index g. */
  sourceAt(g: number): number {
    const u = hashKeyCounter(this.key, g);
    const t = this.thresholds;
    let s = 0;
    // u ≤ 0xffffffff always falls under the last positive source's threshold, which is 0xffffffff;
    // a zero-probability source has a zero-width interval and is never chosen.
    while (u >= t[s]! && !(t[s] === 0xffffffff)) s++;
    return s;
  }

  /** Draws of each source among global indices [0, g). */
  countsBefore(g: number): Float64Array {
    const S = this.sources;
    const block = Math.floor(g / BLOCK);
    this.ensureBlocks(block);
    const out = this.counts.slice(block * S, block * S + S);
    for (let x = block * BLOCK; x < g; x++) out[this.sourceAt(x)]!++;
    return out;
  }

  /** The draws at global indices [g0, g0 + count). */
  draws(g0: number, count: number): Draw[] {
    if (!Number.isSafeInteger(g0) || g0 < 0) throw new RangeError(`global sample index must be a non-negative integer, got ${g0}`);
    const counts = this.countsBefore(g0);
    const out: Draw[] = [];
    for (let g = g0; g < g0 + count; g++) {
      const source = this.sourceAt(g);
      const k = counts[source]!++;
      const n = this.samplesPerSource[source]!;
      const epoch = Math.floor(k / n);
      out.push({ source, index: this.permutation(source, epoch).at(k - epoch * n), epoch });
    }
    return out;
  }

  private permutation(source: number, epoch: number): Permutation {
    const cached = this.permutations.get(source);
    if (cached && cached.epoch === epoch) return cached.perm;
    const perm = new Permutation(this.samplesPerSource[source]!, [...this.seedWords, 0x70657201, source, lo32(epoch), hi32(epoch)]);
    this.permutations.set(source, { epoch, perm });
    return perm;
  }

  private ensureBlocks(block: number): void {
    const S = this.sources;
    if (block < this.blocksKnown) return;
    if ((block + 1) * S > this.counts.length) {
      const grown = new Float64Array(Math.max((block + 1) * S, this.counts.length * 2));
      grown.set(this.counts);
      this.counts = grown;
    }
    for (let b = this.blocksKnown; b <= block; b++) {
      const prev = (b - 1) * S, cur = b * S;
      for (let s = 0; s < S; s++) this.counts[cur + s] = this.counts[prev + s]!;
      for (let x = (b - 1) * BLOCK; x < b * BLOCK; x++) this.counts[cur + this.sourceAt(x)]!++;
    }
    this.blocksKnown = block + 1;
  }
}
