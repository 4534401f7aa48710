import { erf } from '../kernels/gelu.js';

const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** d/dx [x·Φ(x)] = Φ(x) + x·φ(x), the exact GELU's derivative. */
export function geluDerivative(x: number): number {
  return 0.5 * (1 + erf(x * Math.SQRT1_2)) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
}

export function geluBackward(dy: Float32Array, x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = dy[i] * geluDerivative(x[i]);
  return out;
}

/** torch.clamp passes the gradient where min ≤ x ≤ max, the bounds included. */
export function clampBackward(dy: Float32Array, x: Float32Array, limit: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] >= -limit && x[i] <= limit ? dy[i] : 0;
  return out;
}
