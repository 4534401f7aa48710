import type { DType, Tensor } from '../backend.js';
import { elementCount } from '../backend.js';
import { innermostFrame } from './recycler.js';

/** Float32 and int32 tensors hold their values; bfloat16 tensors (weights only) hold raw bits. */
export type CpuData = Float32Array | Uint16Array | Int32Array;

/** A CPU tensor: a typed array over shared memory, so worker threads can read and write it in place. */
export class CpuTensor implements Tensor {
  constructor(readonly shape: readonly number[], readonly dtype: DType, readonly data: CpuData) {
    if (data.length !== elementCount(shape)) throw new Error(`tensor of shape [${shape}] given ${data.length} values`);
  }

  get f32(): Float32Array {
    if (!(this.data instanceof Float32Array)) throw new Error(`expected a float32 tensor, got ${this.dtype}`);
    return this.data;
  }
}

/**
 * A zero-filled tensor in shared memory. Inside `CpuBackend.scope` the buffer may be one a finished
 * scope recycled (recycler.ts), and the scope records it so that it is recycled in turn once dead.
 */
export function allocate(shape: readonly number[], dtype: DType): CpuTensor {
  const n = elementCount(shape);
  if (dtype === 'float16') throw new Error('the CPU backend stores float16 as float32: convert on upload');
  const bytes = (dtype === 'bfloat16' ? 2 : 4) * n;
  const frame = innermostFrame();
  const buffer = frame?.recycler.take(bytes) ?? new SharedArrayBuffer(bytes);
  const data = dtype === 'float32' ? new Float32Array(buffer) : dtype === 'int32' ? new Int32Array(buffer) : new Uint16Array(buffer);
  frame?.allocated.push(data);
  return new CpuTensor(shape, dtype, data);
}

export function asCpu(t: Tensor): CpuTensor {
  if (!(t instanceof CpuTensor)) throw new Error('a tensor of another backend was given to the CPU backend');
  return t;
}
