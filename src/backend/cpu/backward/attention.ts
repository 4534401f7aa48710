import { attentionHead, type AttentionProblem } from '../kernels/attention.js';

/**
 * Attention for training, per (batch row, head), over a whole sequence (queries = keys = t positions):
 *   s_ij = scale · q_i·k_j − (i − j)·slope   for j ≤ i (and key j not padding)
 *   lse_i = log Σ_j exp(s_ij),   p_ij = exp(s_ij − lse_i),   o_i = Σ_j p_ij v_j
 * The backward pass rebuilds p from q, k and lse (flash-attention's recomputation), so nothing of
 * size t×t is kept between the passes:
 *   D_i = dO_i·o_i,  dv_j = Σ_i p_ij dO_i,  ds_ij = p_ij (dO_i·v_j − D_i),
 *   dq_i = scale Σ_j ds_ij k_j,  dk_j = scale Σ_i ds_ij q_i
 * ALiBi's bias is a constant of the positions, so it has no gradient. Sums run in float64.
 */
export interface TrainingAttentionProblem {
  q: Float32Array; k: Float32Array; v: Float32Array; keyMask: Int32Array | null;
  batch: number; t: number; nHeads: number; dHead: number; scale: number; slopes: Float32Array | null;
}

const visible = (p: TrainingAttentionProblem, b: number, j: number) => !p.keyMask || p.keyMask[b * p.t + j] !== 0;

/**
 * out [batch, t, d] and logSumExp [batch, nHeads, t]: the inference kernel's math (kernels/attention.ts)
 * with the whole sequence as queries and keys. A query that sees no key gets zeros and lse −∞.
 */
export function attentionForward(p: TrainingAttentionProblem): { out: Float32Array; logSumExp: Float32Array } {
  const { batch, t, nHeads, dHead } = p;
  const out = new Float32Array(batch * t * nHeads * dHead);
  const logSumExp = new Float32Array(batch * nHeads * t);
  const problem: AttentionProblem = { ...p, out, logSumExp, tq: t, capacity: t, kvLen: t };
  for (let b = 0; b < batch; b++) for (let h = 0; h < nHeads; h++) attentionHead(problem, b, h, 0, t);
  return { out, logSumExp };
}

export function attentionBackward(
  p: TrainingAttentionProblem, out: Float32Array, logSumExp: Float32Array, dOut: Float32Array,
): { dq: Float32Array; dk: Float32Array; dv: Float32Array } {
  const { q, k, v, batch, t, nHeads, dHead, scale, slopes } = p;
  const d = nHeads * dHead;
  const dq = new Float32Array(batch * t * d), dk = new Float32Array(batch * t * d), dv = new Float32Array(batch * t * d);
  const dkAcc = new Float64Array(t * dHead), dvAcc = new Float64Array(t * dHead), dqAcc = new Float64Array(dHead);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < nHeads; h++) {
      const slope = slopes ? slopes[h] : 0;
      dkAcc.fill(0);
      dvAcc.fill(0);
      for (let i = 0; i < t; i++) {
        const lse = logSumExp[(b * nHeads + h) * t + i];
        if (lse === -Infinity) continue;
        const qo = (b * t + i) * d + h * dHead;
        let D = 0;
        for (let e = 0; e < dHead; e++) D += dOut[qo + e] * out[qo + e];
        dqAcc.fill(0);
        for (let j = 0; j <= i; j++) {
          if (!visible(p, b, j)) continue;
          const ko = (b * t + j) * d + h * dHead;
          let s = 0, dp = 0;
          for (let e = 0; e < dHead; e++) {
            s += q[qo + e] * k[ko + e];
            dp += dOut[qo + e] * v[ko + e];
          }
          const prob = Math.exp(s * scale - (i - j) * slope - lse);
          const ds = prob * (dp - D) * scale;
          const jo = j * dHead;
          for (let e = 0; e < dHead; e++) {
            dvAcc[jo + e] += prob * dOut[qo + e];
            dqAcc[e] += ds * k[ko + e];
            dkAcc[jo + e] += ds * q[qo + e];
          }
        }
        for (let e = 0; e < dHead; e++) dq[qo + e] = dqAcc[e];
      }
      for (let j = 0; j < t; j++) {
        const ko = (b * t + j) * d + h * dHead;
        for (let e = 0; e < dHead; e++) {
          dk[ko + e] = dkAcc[j * dHead + e];
          dv[ko + e] = dvAcc[j * dHead + e];
        }
      }
    }
  }
  return { dq, dk, dv };
}
