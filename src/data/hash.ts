/**
 * Counter-based randomness: every random number the data pipeline uses is a pure function of a key
 * (seed, stream, counter) rather than the state of a generator, so any sample of any step can be
 * computed directly — the property that makes the loader resumable with no saved state.
 */

/** A 32-bit finalizer with full avalanche (Chris Wellons' "lowbias32"). */
export function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x21f0aaad);
  x ^= x >>> 15;
  x = Math.imul(x, 0x735a2d97);
  x ^= x >>> 15;
  return x >>> 0;
}

/** Low and high 32-bit words of a non-negative integer up to 2^53. */
export function lo32(n: number): number {
  return n >>> 0;
}
export function hi32(n: number): number {
  return Math.floor(n / 4294967296) >>> 0;
}

/** Hash of a short tuple of 32-bit words: each word is absorbed and the state re-mixed. */
export function hashWords(words: ArrayLike<number>): number {
  let h = 0x6a09e667;
  for (let i = 0; i < words.length; i++) h = mix32((h ^ (words[i]! >>> 0)) + 0x9e3779b9);
  return mix32(h ^ words.length);
}

/** The fast path for the mixture's inner loop: a hash of (key, 53-bit counter) with no allocation. */
export function hashKeyCounter(key: number, counter: number): number {
  let h = mix32((0x6a09e667 ^ key) + 0x9e3779b9);
  h = mix32((h ^ lo32(counter)) + 0x9e3779b9);
  h = mix32((h ^ hi32(counter)) + 0x9e3779b9);
  return h;
}

/** FNV-1a over a string's UTF-16 code units: a stable content hash (not for security). */
export function hashString(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return mix32(h);
}
