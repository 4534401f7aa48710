import { waitFreeOps, type Tensor, type TrainingBackend, type WaitFreeTrainingOps } from '../backend/backend.js';
import { keptGradients, lossAndGradients, lossAndGradientsOnDevice, zeroGradients, type Gradients } from '../model/backward.js';
import type { TrainingGraph } from '../model/training-forward.js';
import { AdamW, clipGradNorm } from './optimizer.js';

/** One microbatch: [rows, seqLen] token ids, row-major. */
export interface Microbatch { tokens: Int32Array; rows: number }

/** What one optimizer step gave: Σ of its microbatches' summed losses, and the gradient norm before clipping. */
export interface StepResult { step: number; lossSum: number; gradNorm: number }

/**
 * One optimizer step: the gradients of every microbatch accumulated, clipped by their global norm,
 * and an AdamW update. Two paths with the same numbers:
 * - wait-free (a backend with WaitFreeTrainingOps, CUDA): nothing in a step waits for the device. The
 *   gradients are kept from step to step (the same addresses every step) and the first microbatch
 *   writes over them (lossAndGradientsOnDevice's staleGradients: no pass zeroing 5 GB), the loss sums
 *   and the norm stay on the device and are copied out in stream order, the clipping factor is applied
 *   inside AdamW; `settle()` reads the results of all the steps queued since its last call with one
 *   wait (the training loop calls it once per log interval).
 * - otherwise (the CPU; CUDA with the wait-free ops switched off for comparisons) each step returns its
 *   results at once, as it always has.
 */
export class TrainStep {
  private readonly waitFree: WaitFreeTrainingOps | null;
  /** The wait-free path's gradients, kept for the life of this object (made outside any scope), and the tensors that hold them. */
  private readonly grads: Gradients | null;
  private readonly owned: Tensor[];
  /** Results known on the host, and the steps whose results are still on their way (wait-free). */
  private readonly known: StepResult[] = [];
  private readonly queued: Array<{ step: number; microbatches: number }> = [];

  constructor(private readonly be: TrainingBackend, private readonly graph: TrainingGraph, private readonly optimizer: AdamW,
    private readonly clipNorm: number | null) {
    this.waitFree = waitFreeOps(be);
    const kept = this.waitFree ? keptGradients(graph) : null;
    this.grads = kept?.grads ?? null;
    this.owned = kept?.owned ?? [];
  }

  get isWaitFree(): boolean { return this.waitFree !== null; }

  /**
   * Step number `step` (as the results will name it) over `microbatches` microbatches, `batch(i)` giving
   * the i-th; `lossScale` = 1 / the tokens counted over all of them (the mean over the global batch).
   */
  run(step: number, microbatches: number, batch: (micro: number) => Microbatch, lr: number, lossScale: number): void {
    const { be, graph, optimizer } = this;
    const ops = this.waitFree;
    if (!ops) {
      // One scope a step: its gradients and activations go back to the device allocator.
      const result = be.scope(() => {
        const grads = zeroGradients(graph.config, be);
        let sum = 0;
        for (let micro = 0; micro < microbatches; micro++) {
          const b = batch(micro);
          sum += be.scope(() => lossAndGradients(graph, b.tokens, b.rows, grads, lossScale).lossSum);
        }
        const gradNorm = clipGradNorm(be, grads, this.clipNorm);
        optimizer.update(grads, lr);
        return { step, lossSum: sum, gradNorm };
      });
      this.known.push(result);
      return;
    }
    const grads = this.grads!, all = [...grads.values()];
    be.scope(() => {
      for (let micro = 0; micro < microbatches; micro++) {
        const b = batch(micro);
        be.scope(() => {
          // The first microbatch writes over the last step's gradients (no pass zeroing them all).
          const { lossSum } = lossAndGradientsOnDevice(graph, b.tokens, b.rows, grads, lossScale, micro === 0);
          ops.stage([{ tensor: lossSum, offset: 0, type: 'float32' }]); // copied out before the scope frees it (stream order)
        });
      }
      const { norm, factor } = ops.gradNormOnDevice(all, this.clipNorm);
      ops.stage([norm]);
      optimizer.update(grads, lr, factor);
    });
    this.queued.push({ step, microbatches });
  }

  /**
   * The results of the steps run since the last call, in order. Wait-free: one wait for the device
   * (and it throws there if a token id was outside the vocabulary in any of those steps).
   */
  settle(): StepResult[] {
    if (this.waitFree && this.queued.length > 0) {
      const queued = this.queued.splice(0); // spent even when settle throws (a bad token id)
      const values = this.waitFree.settle();
      let at = 0;
      for (const q of queued) {
        // Σ over microbatches in order, in float64, as the other path adds its host numbers.
        let sum = 0;
        for (let i = 0; i < q.microbatches; i++) sum += values[at++];
        this.known.push({ step: q.step, lossSum: sum, gradNorm: values[at++] });
      }
      if (at !== values.length) throw new Error(`TrainStep: ${values.length} values came back for ${queued.length} steps (${at} expected)`);
    }
    return this.known.splice(0);
  }

  /** Give the kept gradients back to the device allocator. */
  dispose(): void {
    for (const t of this.owned) this.be.release(t);
  }
}
