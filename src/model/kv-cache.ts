import type { Backend, Tensor } from '../backend/backend.js';
import type { MptConfig } from './config.js';

/**
 * Keys and values of every layer for a batch of sequences, preallocated to `capacity` positions, and
 * which positions hold real tokens (left padding is 0). `length` positions are filled.
 */
export class KVCache {
  readonly k: Tensor[];
  readonly v: Tensor[];
  /** 1 for a real token, 0 for padding, [batch, capacity]. */
  readonly mask: Int32Array;
  length = 0;
  private maskTensor: Tensor | null = null;
  private maskVersion = -1;

  constructor(private readonly backend: Backend, config: MptConfig, readonly batch: number, readonly capacity: number) {
    const shape = [batch, capacity, config.dModel];
    this.k = Array.from({ length: config.nLayers }, () => backend.zeros(shape, backend.activationDType));
    this.v = Array.from({ length: config.nLayers }, () => backend.zeros(shape, backend.activationDType));
    this.mask = new Int32Array(batch * capacity);
  }

  /** Record which of the next `t` positions are real tokens (all of them when `mask` is null). */
  appendMask(t: number, mask: ArrayLike<number> | null): void {
    for (let b = 0; b < this.batch; b++) {
      for (let i = 0; i < t; i++) this.mask[b * this.capacity + this.length + i] = mask ? (mask[b * t + i] ? 1 : 0) : 1;
    }
  }

  /** The mask on the device, or null when no position of any row is padding (the common case). */
  keyMask(upTo: number): Tensor | null {
    let padded = false;
    for (let b = 0; b < this.batch && !padded; b++) {
      for (let j = 0; j < upTo; j++) if (this.mask[b * this.capacity + j] === 0) { padded = true; break; }
    }
    if (!padded) return null;
    if (this.maskVersion !== upTo) {
      if (this.maskTensor) this.backend.release(this.maskTensor);
      this.maskTensor = this.backend.upload(this.mask, [this.batch, this.capacity], 'int32');
      this.maskVersion = upTo;
    }
    return this.maskTensor;
  }

  /** How many real tokens precede each new position: the positions of learned position embeddings. */
  positions(t: number): Int32Array {
    const out = new Int32Array(this.batch * t);
    for (let b = 0; b < this.batch; b++) {
      let seen = 0;
      for (let j = 0; j < this.length; j++) seen += this.mask[b * this.capacity + j];
      for (let i = 0; i < t; i++) {
        const real = this.mask[b * this.capacity + this.length + i];
        out[b * t + i] = Math.max(seen + real - 1, 0);
        seen += real;
      }
    }
    return out;
  }

  release(): void {
    for (const t of [...this.k, ...this.v]) this.backend.release(t);
    if (this.maskTensor) this.backend.release(this.maskTensor);
  }
}
