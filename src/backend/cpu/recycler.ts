import type { CpuData } from './tensor.js';

/**
 * Activation buffers that `CpuBackend.scope` found dead, kept for the next allocation of the same size.
 *
 * Why: a fresh SharedArrayBuffer costs a page fault per 4 KB on first touch, and dead ones wait for the
 * garbage collector, which lags far behind a forward pass of a long prompt (a 2040-token prompt through
 * the 1.3B model left gigabytes of dead activations resident). Reusing them bounds the resident memory
 * by about one layer's activations and skips the faults. A reused buffer is zero-filled, as a new one is.
 */
export class BufferRecycler {
  private readonly free = new Map<number, SharedArrayBuffer[]>();
  private heldBytes = 0;

  /** Buffers beyond this many bytes are left to the garbage collector. */
  constructor(private readonly maxHeldBytes = 2 ** 31) {}

  take(bytes: number): SharedArrayBuffer | null {
    const buffer = this.free.get(bytes)?.pop();
    if (!buffer) return null;
    this.heldBytes -= bytes;
    new Uint8Array(buffer).fill(0);
    return buffer;
  }

  give(buffer: SharedArrayBuffer): void {
    if (this.heldBytes + buffer.byteLength > this.maxHeldBytes) return;
    let list = this.free.get(buffer.byteLength);
    if (!list) this.free.set(buffer.byteLength, (list = []));
    list.push(buffer);
    this.heldBytes += buffer.byteLength;
  }
}

/** One `scope` call's allocations (allocate() records into the innermost frame). */
export interface AllocationFrame {
  recycler: BufferRecycler;
  allocated: CpuData[];
}

const frames: AllocationFrame[] = [];

export function innermostFrame(): AllocationFrame | undefined {
  return frames[frames.length - 1];
}

/**
 * Run `fn` with a frame that records every array allocate() makes; then hand the buffers not reachable
 * from the result to the recycler, and pass the surviving ones to the enclosing frame (so that its own
 * scope can recycle them once they die there). If `fn` throws, nothing is recycled.
 */
export function recyclingScope<T>(recycler: BufferRecycler, fn: () => T, reachable: (result: T) => Set<ArrayBufferLike>): T {
  const frame: AllocationFrame = { recycler, allocated: [] };
  frames.push(frame);
  let result: T;
  try {
    result = fn();
  } finally {
    frames.pop();
  }
  const keep = reachable(result);
  const parent = innermostFrame();
  for (const data of frame.allocated) {
    if (keep.has(data.buffer)) parent?.allocated.push(data);
    else recycler.give(data.buffer as SharedArrayBuffer);
  }
  return result;
}
