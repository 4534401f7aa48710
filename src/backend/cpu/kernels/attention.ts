/**
 * Causal multi-head attention for one (batch row, head) pair over queries [t0, t1) of that row:
 *   s_j = scale · q·k_j − (p − j)·slope   for keys j ≤ p (p = the query's absolute position)
 *   out = Σ_j softmax(s)_j · v_j
 * Padded keys (mask 0) are left out, as the original's dtype-minimum bias does. A query with no real
 * key (a padding position itself) gets zeros: nothing downstream reads it.
 */
export interface AttentionProblem {
  q: Float32Array; k: Float32Array; v: Float32Array; out: Float32Array; keyMask: Int32Array | null;
  tq: number; capacity: number; kvLen: number; nHeads: number; dHead: number;
  scale: number; slopes: Float32Array | null;
  /** When given, [batch, nHeads, tq]: each query's log Σ_j exp(s_j) (−∞ without a real key), for training. */
  logSumExp?: Float32Array;
}

export function attentionHead(p: AttentionProblem, b: number, h: number, t0: number, t1: number): void {
  const { q, k, v, out, keyMask, tq, capacity, kvLen, nHeads, dHead, scale, slopes } = p;
  const d = nHeads * dHead;
  const slope = slopes ? slopes[h] : 0;
  const scores = new Float64Array(kvLen);
  const acc = new Float64Array(dHead);
  for (let t = t0; t < t1; t++) {
    const pos = kvLen - tq + t;
    const qOffset = (b * tq + t) * d + h * dHead;
    let max = -Infinity;
    for (let j = 0; j <= pos; j++) {
      if (keyMask && keyMask[b * capacity + j] === 0) { scores[j] = -Infinity; continue; }
      const kOffset = (b * capacity + j) * d + h * dHead;
      let s = 0;
      for (let e = 0; e < dHead; e++) s += q[qOffset + e] * k[kOffset + e];
      s = s * scale - (pos - j) * slope;
      scores[j] = s;
      if (s > max) max = s;
    }
    acc.fill(0);
    const outOffset = (b * tq + t) * d + h * dHead;
    const lseIndex = (b * nHeads + h) * tq + t;
    if (max === -Infinity) {
      for (let e = 0; e < dHead; e++) out[outOffset + e] = 0;
      if (p.logSumExp) p.logSumExp[lseIndex] = -Infinity;
      continue;
    }
    let sum = 0;
    for (let j = 0; j <= pos; j++) {
      if (scores[j] === -Infinity) continue;
      const weight = Math.exp(scores[j] - max);
      sum += weight;
      const vOffset = (b * capacity + j) * d + h * dHead;
      for (let e = 0; e < dHead; e++) acc[e] += weight * v[vOffset + e];
    }
    for (let e = 0; e < dHead; e++) out[outOffset + e] = acc[e] / sum;
    if (p.logSumExp) p.logSumExp[lseIndex] = max + Math.log(sum);
  }
}
