import type { CpuPool } from '../pool.js';

/**
 * Matrix products for the backward pass, run on the forward pass's parallel `linear` kernel
 * (out = a · bᵀ, sums in float64): every product of the backward pass is one of those after a
 * transpose, and a transpose costs O(n·k) against the product's O(n·k·m). Buffers handed to the
 * pool live in shared memory so the workers write the caller's memory, not a copy.
 */
export function sharedFloat32(n: number): Float32Array {
  return new Float32Array(new SharedArrayBuffer(4 * n));
}

/** out [n, m] = a [n, k] · b [m, k]ᵀ; b may be bfloat16 bits (widened by the kernel). */
export function matmulABt(pool: CpuPool, a: Float32Array, b: Float32Array | Uint16Array, n: number, k: number, m: number): Float32Array {
  const out = sharedFloat32(n * m);
  if (n === 0 || m === 0) return out;
  pool.run({ kind: 'linear', x: shared(a), w: shared(b), bias: null, out, rows: n, inWidth: k, outWidth: m }, n * k);
  return out;
}

/** [rows, cols] → [cols, rows], widening bfloat16 bits, into shared memory. */
export function transpose(src: Float32Array | Uint16Array, rows: number, cols: number): Float32Array {
  const out = sharedFloat32(rows * cols);
  if (src instanceof Uint16Array) {
    const bits = new Uint32Array(out.buffer);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) bits[c * rows + r] = src[r * cols + c] << 16;
    return out;
  }
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c];
  return out;
}

/** The same values in shared memory (a copy only when they are not there already). */
function shared<T extends Float32Array | Uint16Array>(a: T): T {
  if (a.buffer instanceof SharedArrayBuffer) return a;
  const copy = new (a.constructor as { new (b: SharedArrayBuffer): T })(new SharedArrayBuffer(a.byteLength));
  copy.set(a as never);
  return copy;
}

/** float32 values of a float32 array or of bfloat16 bits. */
export function widen(a: Float32Array | Uint16Array): Float32Array {
  if (a instanceof Float32Array) return a;
  const out = new Float32Array(a.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < a.length; i++) bits[i] = a[i] << 16;
  return out;
}
