import { median } from '../../util/median.js';

/**
 * In-step GEMM tuning's bookkeeping for one shape, without the device (cublaslt-api.ts drives it with
 * CUDA events): the real calls of the shape take the candidates in rotation (call n the n-th live one,
 * mod their count), each call's time joins its candidate's samples once its events have completed, and
 * the shape is ready to choose once every live candidate has `samples` of them. The first `warmup`
 * completed calls of each candidate are not counted: a candidate's first launch can include loading its
 * kernel and the first touch of its workspace, which the step's later calls never pay.
 */
export class CandidateRotation {
  private calls = 0;
  private readonly live: number[];
  private readonly seen: number[];
  private readonly counted: number[][];

  constructor(readonly candidates: number, private readonly warmup = 1) {
    if (!Number.isInteger(candidates) || candidates < 1) throw new RangeError(`CandidateRotation: ${candidates} candidates`);
    this.live = Array.from({ length: candidates }, (_, i) => i);
    this.seen = new Array<number>(candidates).fill(0);
    this.counted = Array.from({ length: candidates }, () => []);
  }

  /** The candidate for the next real call (and counts the call). */
  next(): number {
    return this.live[this.calls++ % this.live.length];
  }

  /** Real calls handed out so far (failed launches included). */
  get callsMade(): number { return this.calls; }

  /** The candidates still in the rotation, in the heuristic's order. */
  get liveCandidates(): readonly number[] { return this.live; }

  /** Take a candidate out of the rotation (its launch failed); false when it was the last one (it stays). */
  drop(candidate: number): boolean {
    const at = this.live.indexOf(candidate);
    if (at < 0) return true;
    if (this.live.length === 1) return false;
    this.live.splice(at, 1);
    this.counted[candidate] = [];
    return true;
  }

  /** A completed call's time (ms) for `candidate`; its first `warmup` are not counted. */
  add(candidate: number, ms: number): void {
    if (this.seen[candidate]++ < this.warmup) return;
    if (this.live.includes(candidate)) this.counted[candidate].push(ms);
  }

  /** Counted samples of a candidate. */
  samplesOf(candidate: number): number { return this.counted[candidate].length; }

  /** Every live candidate has at least `samples` counted times. */
  complete(samples: number): boolean {
    return this.live.every((i) => this.counted[i].length >= samples);
  }

  /** The median counted time of each candidate; Infinity for one dropped or without a counted time. */
  times(): number[] {
    return this.counted.map((xs, i) => (this.live.includes(i) && xs.length > 0 ? median(xs) : Infinity));
  }
}
