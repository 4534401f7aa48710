import { float32ToBfloat16Array } from '../../../util/dtype.js';

/**
 * One AdamW step, in place, in the order torch.optim.AdamW does it (decay first, then the Adam
 * update with bias corrections folded into the step size and the denominator). Per-element math runs
 * in float64 and is stored back in float32.
 */
export function adamwStep(
  param: Float32Array, grad: Float32Array, m: Float32Array, v: Float32Array,
  lr: number, beta1: number, beta2: number, eps: number, decay: number, step: number,
): void {
  const bc1 = 1 - beta1 ** step;
  const bc2Sqrt = Math.sqrt(1 - beta2 ** step);
  const stepSize = lr / bc1;
  const keep = 1 - decay;
  for (let i = 0; i < param.length; i++) {
    const g = grad[i];
    const p = decay !== 0 ? Math.fround(param[i] * keep) : param[i];
    m[i] = beta1 * m[i] + (1 - beta1) * g;
    v[i] = beta2 * v[i] + (1 - beta2) * g * g;
    param[i] = p - (stepSize * m[i]) / (Math.sqrt(v[i]) / bc2Sqrt + eps);
  }
}

/** Refresh a compute copy (bfloat16 bits or float32) from the master values. */
export function refreshCopy(master: Float32Array, copy: Float32Array | Uint16Array): void {
  if (copy instanceof Uint16Array) float32ToBfloat16Array(master, copy);
  else copy.set(master);
}
