/**
 * A caching device allocator: freed blocks go to a free list keyed by their rounded size and are
 * handed out again, so steady-state loops (decode steps, training steps) call cuMemAlloc never.
 * Sizes round up to 512 bytes below 1 MiB and to 2 MiB above, so nearby sizes share blocks.
 * On out-of-memory the cache is returned to the driver and the allocation tried once more.
 */
import { cu, CudaError } from './driver.js';

const SMALL = 512, LARGE = 2 << 20;

export function roundedSize(bytes: number): number {
  const b = Math.max(bytes, 1);
  return b < (1 << 20) ? Math.ceil(b / SMALL) * SMALL : Math.ceil(b / LARGE) * LARGE;
}

export class CachingAllocator {
  private readonly free = new Map<number, number[]>();
  private readonly sizes = new Map<number, number>();
  private inUse = 0;
  private reserved = 0;
  private peak = 0;
  private readonly out = new BigUint64Array(1);

  alloc(bytes: number): number {
    const size = roundedSize(bytes);
    const list = this.free.get(size);
    let ptr = list?.pop();
    if (ptr === undefined) {
      ptr = this.fresh(size);
      this.reserved += size;
    }
    this.sizes.set(ptr, size);
    this.inUse += size;
    if (this.inUse > this.peak) this.peak = this.inUse;
    return ptr;
  }

  private fresh(size: number): number {
    try {
      cu('cuMemAlloc_v2', this.out, size);
    } catch (error) {
      if (!(error instanceof CudaError) || error.code !== 2) throw error; // 2 = CUDA_ERROR_OUT_OF_MEMORY
      this.emptyCache();
      cu('cuMemAlloc_v2', this.out, size);
    }
    return Number(this.out[0]);
  }

  /** Return a block to the cache (not to the driver). */
  release(ptr: number): void {
    const size = this.sizes.get(ptr);
    if (size === undefined) throw new Error(`release of device pointer 0x${ptr.toString(16)} that this allocator does not own`);
    this.sizes.delete(ptr);
    this.inUse -= size;
    let list = this.free.get(size);
    if (!list) this.free.set(size, list = []);
    list.push(ptr);
  }

  /** Give every cached (free) block back to the driver. */
  emptyCache(): void {
    for (const [size, list] of this.free) {
      for (const ptr of list) {
        cu('cuMemFree_v2', ptr);
        this.reserved -= size;
      }
    }
    this.free.clear();
  }

  stats(): { inUse: number; reserved: number; peak: number } {
    return { inUse: this.inUse, reserved: this.reserved, peak: this.peak };
  }

  resetPeak(): void {
    this.peak = this.inUse;
  }
}
