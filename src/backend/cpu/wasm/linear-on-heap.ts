import { bfloat16BitsToFloat32 } from '../../../util/dtype.js';
import type { CpuPool } from '../pool.js';
import type { WasmHeap } from './heap.js';

/**
 * x · wᵀ + bias with the weight on the wasm heap: copy a chunk of input rows into the heap's scratch
 * block, let the pool's threads run the SIMD tiles over their shares of the output columns, copy the
 * outputs back, then add what the 8-wide kernels leave out (the last inWidth % 8 products) and the
 * bias. Chunks bound the scratch block (logits of a long prompt would otherwise need it huge).
 * Returns false, having done nothing, when the heap has no room for the scratch block.
 */
const SCRATCH_BYTES = 32 * 1024 * 1024;

export function linearOnHeap(
  heap: WasmHeap, pool: CpuPool, x: Float32Array, w: Float32Array | Uint16Array, wAddress: number,
  bias: Float32Array | null, out: Float32Array, rows: number, inWidth: number, outWidth: number,
): boolean {
  const rowBytes = (inWidth + outWidth) * 4;
  let chunk = Math.max(1, Math.min(rows, Math.floor(SCRATCH_BYTES / rowBytes)));
  if (chunk > 4) chunk -= chunk % 4;
  const scratch = heap.scratch(chunk * rowBytes);
  if (scratch === null) return false;
  const weight = w instanceof Uint16Array ? 'bf16' : 'f32';
  for (let r0 = 0; r0 < rows; r0 += chunk) {
    const n = Math.min(chunk, rows - r0);
    const outAddress = scratch + n * inWidth * 4;
    heap.float32View(scratch, n * inWidth).set(x.subarray(r0 * inWidth, (r0 + n) * inWidth));
    pool.run({ kind: 'linear-wasm', weight, x: scratch, w: wAddress, out: outAddress, rows: n, inWidth, outWidth }, n * inWidth);
    out.set(heap.float32View(outAddress, n * outWidth), r0 * outWidth);
  }
  addTailAndBias(x, w, bias, out, rows, inWidth, outWidth);
  return true;
}

function addTailAndBias(x: Float32Array, w: Float32Array | Uint16Array, bias: Float32Array | null, out: Float32Array, rows: number, inWidth: number, outWidth: number): void {
  const tail = inWidth - (inWidth % 8);
  if (tail === inWidth && !bias) return;
  const weightAt = w instanceof Uint16Array ? (i: number) => bfloat16BitsToFloat32(w[i]) : (i: number) => w[i];
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < outWidth; j++) {
      let s = bias ? bias[j] : 0;
      for (let k = tail; k < inWidth; k++) s += x[i * inWidth + k] * weightAt(j * inWidth + k);
      out[i * outWidth + j] += s;
    }
  }
}
