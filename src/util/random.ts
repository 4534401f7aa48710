/**
 * A small seeded generator (xoshiro128**): the same seed gives the same stream on every machine, which
 * is what `--seed` promises. Not for cryptography.
 */
export class Rng {
  private s = new Uint32Array(4);

  constructor(seed: number) {
    // SplitMix32 spreads any seed over the four state words (an all-zero state would stick at zero).
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      this.s[i] = mix32(x);
    }
  }

  /**
   * An independent stream named by (seed, ...keys), e.g. one for each block of a tensor, so that blocks can
   * be filled in any order, on any thread, with the same values. Each state word passes the seed and every
   * key through a bijective 32-bit mixer, so two key lists share a stream only if all four words collide.
   */
  static keyed(seed: number, ...keys: number[]): Rng {
    const rng = new Rng(0);
    for (let i = 0; i < 4; i++) {
      let x = mix32((seed ^ Math.imul(i + 1, 0x9e3779b9)) >>> 0);
      for (const key of keys) x = mix32((x ^ key) >>> 0);
      rng.s[i] = x;
    }
    return rng;
  }

  /** A uniform 32-bit unsigned integer. */
  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** A uniform float in [0, 1) with 53 random bits. */
  next(): number {
    return ((this.nextUint32() >>> 5) * 67108864 + (this.nextUint32() >>> 6)) / 9007199254740992;
  }

  /** A standard normal draw (Box–Muller). */
  normal(): number {
    const u = 1 - this.next(), v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /**
   * `out` filled with normal draws times `std`, for weight initialisation: Box–Muller's two outputs (cos
   * and sin) from a pair of 32-bit uniforms, about twice as fast as normal() per value (a 1.3B-parameter
   * init took ~90 s on one core that way). The radius's uniform is (x + 1) / 2³², never 0, so draws
   * stop at 6.66 σ (a chance of ~3e-11 a value of going further with 53 bits): no matter for an init.
   */
  fillNormal(out: Float32Array, std: number): void {
    const step = (2 * Math.PI) / 4294967296;
    for (let i = 0; i < out.length; i += 2) {
      const r = std * Math.sqrt(-2 * Math.log((this.nextUint32() + 1) / 4294967296)), angle = this.nextUint32() * step;
      out[i] = r * Math.cos(angle);
      if (i + 1 < out.length) out[i + 1] = r * Math.sin(angle);
    }
  }
}

/** MurmurHash3's finalizer: a bijection of 32-bit words that flips about half the bits for any one-bit change. */
function mix32(z: number): number {
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

const rotl = (x: number, k: number) => ((x << k) | (x >>> (32 - k))) >>> 0;
