import { attentionFunctions } from './attention-module.js';
import { buildLinearModule, TILE_SHAPES } from './linear-module.js';
import { installKernels } from './runtime.js';

/**
 * The CPU backend's WebAssembly heap: one shared `WebAssembly.Memory` (up to 4 GiB) where weight
 * tensors live, so the generated SIMD kernels, which can only address their own memory, read them in
 * place, and every worker thread instantiates the same kernels over the same memory. Activations stay
 * in ordinary SharedArrayBuffers and are copied through a scratch block per call: they are small next
 * to the weights, and the garbage collector keeps freeing them as before.
 *
 * Allocation is first-fit over a free list sorted by address, with neighbours merged on free; the
 * memory grows (it never shrinks) when nothing fits. A block is freed by `CpuBackend.release` or,
 * failing that, when its typed array is garbage collected.
 */
const PAGE_BYTES = 65536;
/** wasm32 addresses 2^32 bytes: 65536 pages of 64 KiB. */
export const MAX_PAGES = 65536;
const ALIGN = 64;
/** Address 0 is never handed out, so 0 can mean "none". */
const FIRST_ADDRESS = ALIGN;

interface Block { start: number; size: number }

export class WasmHeap {
  readonly memory: WebAssembly.Memory;
  readonly module: WebAssembly.Module;
  /** Free blocks below `end`, sorted by start, never adjacent (merged on free). */
  private readonly freeBlocks: Block[] = [];
  /** Everything from `end` to the top of the 4 GiB space is free. */
  private end = FIRST_ADDRESS;
  /** Memory at and above this address has never been handed out: still the zeros it grew with. */
  private untouched = FIRST_ADDRESS;
  private readonly live = new Map<number, number>();
  /** The SharedArrayBuffer objects `memory.buffer` has returned: a new one after each grow. */
  private readonly buffers = new WeakSet<ArrayBufferLike>();
  private readonly collected = new FinalizationRegistry<number>((address) => this.free(address));
  private scratchBlock: Block | null = null;

  constructor(maxPages = MAX_PAGES) {
    this.memory = new WebAssembly.Memory({ initial: 1, maximum: maxPages, shared: true });
    this.module = new WebAssembly.Module(buildLinearModule(maxPages, TILE_SHAPES, attentionFunctions()));
    installKernels(this.module, this.memory);
  }

  /** The address just past the highest block in use. */
  get top(): number {
    return this.end;
  }

  get liveBytes(): number {
    let sum = 0;
    for (const size of this.live.values()) sum += size;
    return sum;
  }

  /** A block of at least `bytes` (64-byte aligned), or null when the 4 GiB space has no room. */
  allocate(bytes: number): number | null {
    return this.allocateBlock(bytes)?.start ?? null;
  }

  private allocateBlock(bytes: number): { start: number; fresh: boolean } | null {
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    const index = this.freeBlocks.findIndex((b) => b.size >= size);
    let start: number;
    if (index >= 0) {
      const block = this.freeBlocks[index];
      start = block.start;
      if (block.size === size) this.freeBlocks.splice(index, 1);
      else { block.start += size; block.size -= size; }
    } else {
      if (!this.reserve(this.end + size)) return null;
      start = this.end;
      this.end += size;
    }
    this.live.set(start, size);
    const fresh = start >= this.untouched;
    this.untouched = Math.max(this.untouched, start + size);
    return { start, fresh };
  }

  /** Return a block; freeing an address that is not live (already freed) does nothing. */
  free(address: number): void {
    const size = this.live.get(address);
    if (size === undefined) return;
    this.live.delete(address);
    let i = 0;
    while (i < this.freeBlocks.length && this.freeBlocks[i].start < address) i++;
    const block: Block = { start: address, size };
    this.freeBlocks.splice(i, 0, block);
    const next = this.freeBlocks[i + 1];
    if (next && block.start + block.size === next.start) { block.size += next.size; this.freeBlocks.splice(i + 1, 1); }
    const previous = this.freeBlocks[i - 1];
    if (previous && previous.start + previous.size === block.start) { previous.size += block.size; this.freeBlocks.splice(i, 1); }
    const last = this.freeBlocks[this.freeBlocks.length - 1];
    if (last && last.start + last.size === this.end) { this.end = last.start; this.freeBlocks.pop(); }
  }

  /** A zero-filled typed array of `length` elements on the heap, freed when collected; null when full. */
  array(kind: 'float32' | 'bfloat16', length: number): Float32Array | Uint16Array | null {
    const bytesPer = kind === 'float32' ? 4 : 2;
    const block = this.allocateBlock(length * bytesPer);
    if (block === null) return null;
    const address = block.start;
    const array = kind === 'float32' ? new Float32Array(this.buffer(), address, length) : new Uint16Array(this.buffer(), address, length);
    // A reused block holds old values; a fresh one is zero already (and not writing keeps it out of RSS).
    if (!block.fresh) array.fill(0);
    this.collected.register(array, address, array);
    return array;
  }

  /** Free the block of an array made by `array` now rather than when it is collected. */
  releaseArray(array: ArrayBufferView): void {
    const address = this.addressOf(array);
    if (address === null) return;
    this.collected.unregister(array);
    this.free(address);
  }

  /** The heap address of `array`'s first element, or null when it is not on this heap. */
  addressOf(array: ArrayBufferView): number | null {
    return this.buffers.has(array.buffer) ? array.byteOffset : null;
  }

  /**
   * A block of at least `bytes` for one call's inputs and outputs (main thread, one call at a time),
   * kept for the next call unless it is large.
   */
  scratch(bytes: number): number | null {
    if (this.scratchBlock && this.scratchBlock.size >= bytes) return this.scratchBlock.start;
    if (this.scratchBlock) this.free(this.scratchBlock.start);
    const start = this.allocate(bytes);
    this.scratchBlock = start === null ? null : { start, size: bytes };
    return start;
  }

  float32View(address: number, length: number): Float32Array {
    return new Float32Array(this.buffer(), address, length);
  }

  private buffer(): ArrayBuffer {
    const buffer = this.memory.buffer;
    this.buffers.add(buffer);
    return buffer;
  }

  /** Grow the memory to cover byte `top`; false when the maximum or the machine says no. */
  private reserve(top: number): boolean {
    const have = this.memory.buffer.byteLength;
    if (top <= have) return true;
    // Grow by at least 1/8 of what there is, so many small allocations do not grow one page at a time.
    const need = Math.ceil((top - have) / PAGE_BYTES);
    const pages = Math.max(need, Math.floor(have / PAGE_BYTES / 8));
    for (const tryPages of [pages, need]) {
      try {
        this.memory.grow(tryPages);
        return true;
      } catch {
        // over the maximum or out of memory: try the bare need, then give up
      }
    }
    return false;
  }
}

let shared: WasmHeap | null | undefined;

/**
 * The process's heap (one per thread that asks), created on first use; null when WebAssembly SIMD or
 * shared memory is unavailable or MPT_WASM=0 turns the fast path off (the JS kernels then run alone).
 */
export function sharedHeap(): WasmHeap | null {
  if (shared === undefined) {
    if (process.env.MPT_WASM === '0') shared = null;
    else {
      try {
        shared = new WasmHeap();
      } catch (error) {
        process.emitWarning(`mpt: WebAssembly kernels unavailable, using the plain JS kernels (${(error as Error).message})`);
        shared = null;
      }
    }
  }
  return shared;
}
