// CPU twins of GPU kernels the CPU backend has no op for (sampling.cu), written plainly.

const MASK64 = (1n << 64n) - 1n;
function splitmix64(z: bigint): bigint {
  z = (z + 0x9E3779B97F4A7C15n) & MASK64;
  z = ((z ^ (z >> 30n)) * 0xBF58476D1CE4E5B9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94D049BB133111EBn) & MASK64;
  return z ^ (z >> 31n);
}

/** The uniform number sample_rows draws for (seed, row, step): 24 random bits. */
export function uniformFor(seed: number, row: number, step: number): number {
  const inner = splitmix64(((BigInt(row) << 32n) ^ BigInt(step >>> 0)) & MASK64);
  const r = splitmix64((BigInt(seed) ^ inner) & MASK64);
  return Number(r >> 40n) / 16777216;
}

/**
 * sample_rows on the CPU: scores x/T; keep values ≥ the k-th largest (k > 0), then values ≥ the smallest
 * value of the shortest best-first prefix whose mass reaches top_p of the kept mass; draw u·mass and
 * walk the kept tokens in vocabulary order. Returns that pick first, then any other kept token whose
 * share of the cumulative mass lies within `relTol`·mass of the drawn target: the kernel sums float32
 * __expf terms in a parallel scan, the twin float64 exp in order, so a target that close to a boundary
 * between two kept tokens may land on either side; anywhere else the answer is one token.
 */
export function sampleTwinCandidates(
  logits: Float32Array, s: { temperature: number; topK: number; topP: number }, seed: number, row: number, step: number, relTol: number,
): number[] {
  const x = Float32Array.from(logits, (v) => v * Math.fround(1 / s.temperature));
  const sorted = Array.from(x).sort((a, b) => b - a);
  const max = sorted[0];
  let floor = -Infinity;
  if (s.topK > 0 && s.topK < x.length) floor = sorted[s.topK - 1];
  if (s.topP < 1) {
    const kept = sorted.filter((v) => v >= floor);
    const z = kept.reduce((a, v) => a + Math.exp(v - max), 0);
    let cum = 0;
    for (const v of kept) {
      cum += Math.exp(v - max);
      if (cum >= s.topP * z) { floor = v; break; }
    }
  }
  let total = 0;
  for (const v of x) if (v >= floor) total += Math.exp(v - max);
  const target = uniformFor(seed, row, step) * total, tol = relTol * total;
  let cum = 0, last = -1, pick = -1;
  const near: number[] = [];
  for (let i = 0; i < x.length; i++) {
    if (x[i] < floor) continue;
    const before = cum;
    cum += Math.exp(x[i] - max);
    last = i;
    if (pick < 0 && cum > target) pick = i;
    if (cum > target - tol && before <= target + tol) near.push(i);
    if (before > target + tol) break;
  }
  if (pick < 0) pick = last;
  return [pick, ...near.filter((i) => i !== pick)];
}
