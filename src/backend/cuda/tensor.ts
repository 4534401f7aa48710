/** Device tensors of the CUDA backend: a shape and dtype over a block from the caching allocator. */
import type { DType, Tensor } from '../backend.js';

export const bytesPer = (dtype: DType): number => (dtype === 'bfloat16' || dtype === 'float16' ? 2 : 4);

/** A device allocation; views share it. `live` turns false when it goes back to the allocator. */
export class DeviceBlock {
  live = true;
  constructor(readonly ptr: number, readonly bytes: number) {}
}

export class CudaTensor implements Tensor {
  constructor(readonly shape: readonly number[], readonly dtype: DType, readonly block: DeviceBlock, readonly offset = 0) {}
  get ptr(): number {
    if (!this.block.live) throw new Error(`use of a released CUDA tensor [${this.shape.join(', ')}] ${this.dtype}`);
    return this.block.ptr + this.offset;
  }
}

export function asCuda(t: Tensor, what: string): CudaTensor {
  if (!(t instanceof CudaTensor)) throw new Error(`${what}: expected a CUDA tensor, got one from another backend`);
  return t;
}
