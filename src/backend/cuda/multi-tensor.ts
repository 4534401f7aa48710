/**
 * The two device tables a multi-tensor kernel reads (adamw.cu adamw_multi, train_elementwise.cu
 * sum_squares_multi), kept between launches:
 * - chunks: (tensor index, chunk index) int32 pairs, one for every `chunk` elements of each tensor. They
 *   depend on the sizes only, so they are built once (320K pairs for 1.3B parameters: building them on
 *   the host every step left the GPU idle);
 * - tensors: each tensor's struct of 64-bit fields (its pointers and element count), uploaded again
 *   whenever a field changes. Uploads are in stream order, so the launch before has read the old table.
 */
import { elementCount } from '../backend.js';
import type { CudaBackend } from './index.js';
import type { CudaTensor } from './tensor.js';

export class MultiTensorTables {
  private chunks: { key: string; table: CudaTensor; count: number } | null = null;
  private tensors: { key: string; table: CudaTensor } | null = null;

  /** `upload(dst, data)`: host → device in stream order, without waiting for the device. */
  constructor(private readonly be: CudaBackend, readonly chunk: number, private readonly upload: (dst: number, data: ArrayBufferView) => void) {}

  /**
   * The tables for tensors of these element counts and struct fields (addresses and counts, each
   * below 2^53): their device addresses and the number of chunks (the launch's grid or work list).
   */
  update(sizes: readonly number[], fields: ReadonlyArray<readonly number[]>): { chunks: number; tensors: number; count: number } {
    const sizeKey = sizes.join(',');
    if (this.chunks?.key !== sizeKey) {
      if (this.chunks) this.be.release(this.chunks.table);
      let count = 0;
      for (const n of sizes) count += Math.ceil(n / this.chunk);
      const pairs = new Int32Array(2 * count);
      let at = 0;
      sizes.forEach((n, i) => { for (let c = 0; c * this.chunk < n; c++, at += 2) { pairs[at] = i; pairs[at + 1] = c; } });
      const table = this.be.persistent([pairs.length], 'int32');
      this.upload(table.ptr, pairs);
      this.chunks = { key: sizeKey, table, count };
    }
    const fieldKey = fields.map((f) => f.join(',')).join(';');
    if (this.tensors?.key !== fieldKey) {
      const values = new BigInt64Array(fields.flatMap((f) => f.map(BigInt)));
      if (this.tensors && elementCount(this.tensors.table.shape) !== 2 * values.length) {
        this.be.release(this.tensors.table);
        this.tensors = null;
      }
      const table = this.tensors?.table ?? this.be.persistent([2 * values.length], 'int32');
      this.upload(table.ptr, values);
      this.tensors = { key: fieldKey, table };
    }
    return { chunks: this.chunks.table.ptr, tensors: this.tensors.table.ptr, count: this.chunks.count };
  }
}
