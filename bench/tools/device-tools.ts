// What the A/B tools in bench/tools share: inputs made on the device, median milliseconds over CUDA
// events, and the relative error between two results.
import type { CudaBackend } from '../../src/backend/cuda/index.js';
import { CudaEvent } from '../../src/backend/cuda/driver.js';
import type { CudaTensor } from '../../src/backend/cuda/tensor.js';

/**
 * A tensor of normal values (mean, std) made on the device: bf16 (from float32 values), or float32.
 * `seed` numbers the draw: a tool passes a counter so that each input differs.
 */
export function randomOnDevice(be: CudaBackend, shape: number[], seed: number, mean: number, std: number, dtype: 'bfloat16' | 'float32' = 'bfloat16'): CudaTensor {
  const n = shape.reduce((a, b) => a * b, 1), f = be.alloc(shape, 'float32');
  be.kernels.get('elementwise.cu', 'fill_normal', { MPT_BF16: false }).launch([Math.min(Math.ceil(n / 256), 4096)], [256], [f.ptr, n, seed, mean, std]);
  if (dtype === 'float32') return f;
  const t = be.alloc(shape, 'bfloat16');
  be.launch1d('elementwise.cu', 'f32_to_t', n, [f.ptr, t.ptr, n], { MPT_BF16: true });
  be.release(f);
  return t;
}

export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * Median ms of `fn` over `reps` calls, events around each call alone, after 3 untimed calls;
 * `before` runs untimed ahead of every call (e.g. rewriting the input as its producer would).
 */
export function medianMs(be: CudaBackend, fn: () => void, reps: number, before: (() => void) | null = null): number {
  for (let i = 0; i < 3; i++) { before?.(); fn(); }
  const ms: number[] = [], a = new CudaEvent(be.ctx), b = new CudaEvent(be.ctx);
  for (let i = 0; i < reps; i++) { before?.(); a.record(); fn(); b.record(); ms.push(b.since(a)); }
  a.destroy(); b.destroy();
  return median(ms);
}

/** ‖got − want‖ / ‖want‖ over all elements. */
export function relErr(got: Float32Array, want: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < got.length; i++) { num += (got[i] - want[i]) ** 2; den += want[i] ** 2; }
  return Math.sqrt(num / Math.max(den, 1e-30));
}
