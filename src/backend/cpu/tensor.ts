import type { DType, Tensor } from '../backend.js';
import { elementCount } from '../backend.js';

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

export function allocate(shape: readonly number[], dtype: DType): CpuTensor {
  const n = elementCount(shape);
  switch (dtype) {
    case 'float32': return new CpuTensor(shape, dtype, new Float32Array(new SharedArrayBuffer(4 * n)));
    case 'int32': return new CpuTensor(shape, dtype, new Int32Array(new SharedArrayBuffer(4 * n)));
    case 'bfloat16': return new CpuTensor(shape, dtype, new Uint16Array(new SharedArrayBuffer(2 * n)));
    case 'float16': throw new Error('the CPU backend stores float16 as float32: convert on upload');
  }
}

export function asCpu(t: Tensor): CpuTensor {
  if (!(t instanceof CpuTensor)) throw new Error('a tensor of another backend was given to the CPU backend');
  return t;
}
