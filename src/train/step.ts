import { sideStreamAdamw, waitFreeOps, type DeviceScalar, type Tensor, type TrainingBackend, type WaitFreeTrainingOps } from '../backend/backend.js';
import { keptGradients, lossAndGradients, lossAndGradientsOnDevice, overwrittenGradients, zeroGradients, type Gradients } from '../model/backward.js';
import { parameterShapes } from '../model/config.js';
import type { ForwardHooks, TrainingGraph } from '../model/training-forward.js';
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
 *
 * Deferred AdamW (`overlapAdamw`, MPT_TRAIN_OVERLAP_ADAMW=1; off by default): the update is recorded at
 * the end of the step (AdamW.defer) and applied by the next forward, group by group, just before the
 * parameters are read (updateGroups): with global-norm clipping the update cannot start before the norm
 * is known, so the next forward is where it can overlap — on CUDA its groups run on a second stream
 * beside the forward's GEMMs, each block's forward waiting for its own group. The same numbers as the
 * update at the end of the step, bit for bit: every parameter gets the same adamwStepAll arithmetic
 * on the same values, only later. `flush()` applies what is pending: the loop calls it before anything
 * reads the weights or the moments outside a step (eval, checkpoint, the end of training).
 */
export class TrainStep {
  private readonly waitFree: WaitFreeTrainingOps | null;
  /** The wait-free path's gradients, kept for the life of this object (made outside any scope), and the tensors that hold them. */
  private readonly grads: Gradients | null;
  private readonly owned: Tensor[];
  /** Results known on the host, and the steps whose results are still on their way (wait-free). */
  private readonly known: StepResult[] = [];
  private readonly queued: Array<{ step: number; microbatches: number }> = [];
  /** Deferred AdamW's parameter names by group (updateGroups), and the persistent copy of the clipping factor the deferred update reads (wait-free). */
  private readonly groups: string[][];
  private readonly deferredScale: Tensor | null;
  private overlap = process.env.MPT_TRAIN_OVERLAP_ADAMW === '1';

  constructor(private readonly be: TrainingBackend, private readonly graph: TrainingGraph, private readonly optimizer: AdamW,
    private readonly clipNorm: number | null) {
    this.waitFree = waitFreeOps(be);
    const kept = this.waitFree ? keptGradients(graph) : null;
    this.grads = kept?.grads ?? null;
    this.owned = kept?.owned ?? [];
    this.groups = updateGroups(graph);
    // The step's factor lives in the step's scope, and the allocator may hand its memory to the next
    // step before a deferred group reads it: the update reads this copy, made outside any scope.
    this.deferredScale = this.waitFree && sideStreamAdamw(be) ? be.zeros([1], 'float32') : null;
    if (this.deferredScale) this.owned.push(this.deferredScale);
    graph.hooks = this.hooks;
  }

  /**
   * Where the next forward applies the deferred update (on CUDA: where the main stream waits for each
   * group on the side stream). The last hook applies every group left, so by the time the backward runs
   * the main stream has waited for all of them: the backward writes over the gradients the groups read
   * (staleGradients) and the next defer() writes the clipping factor they read — both on the main stream,
   * after those waits, so neither can run before the side stream is done with them.
   */
  private readonly hooks: ForwardHooks = {
    beforeBlock: (layer) => this.optimizer.applyDeferred(1 + layer),
    beforeOutput: () => this.optimizer.flush(), // the rest: the output table when untied
  };

  get isWaitFree(): boolean { return this.waitFree !== null; }

  /** Whether the optimizer update is deferred into the next step's forward; switching applies what is pending first. */
  get overlapAdamw(): boolean { return this.overlap; }
  set overlapAdamw(on: boolean) {
    if (on !== this.overlap) this.flush();
    this.overlap = on;
  }

  /** Apply the deferred update, if any (before reading the weights or the moments outside a step). */
  flush(): void {
    this.optimizer.flush();
  }

  /** Defer this step's update (overlapAdamw), or apply it now. */
  private finishUpdate(grads: Gradients, lr: number, factor: DeviceScalar | null, release: readonly Tensor[] | null): void {
    if (!this.overlap) {
      this.optimizer.update(grads, lr, factor);
      if (release) for (const t of release) this.be.release(t);
      return;
    }
    let scale: DeviceScalar | null = null;
    const side = sideStreamAdamw(this.be);
    if (factor) {
      if (!side || !this.deferredScale) throw new Error(`TrainStep: deferring AdamW with a device clipping factor needs the ${this.be.name} backend's side-stream ops`);
      side.copyScalar(this.deferredScale, factor);
      scale = { tensor: this.deferredScale, offset: 0, type: 'float32' };
    }
    // The side stream only where nothing it reads is freed or rewritten before the main stream waits for it: the kept gradients of the wait-free path.
    this.optimizer.defer(grads, lr, scale, this.groups, { sideStream: this.waitFree !== null && side?.sideStream === true, release: release ?? [] });
  }

  /**
   * Step number `step` (as the results will name it) over `microbatches` microbatches, `batch(i)` giving
   * the i-th; `lossScale` = 1 / the tokens counted over all of them (the mean over the global batch).
   */
  run(step: number, microbatches: number, batch: (micro: number) => Microbatch, lr: number, lossScale: number): void {
    const { be, graph, optimizer } = this;
    const ops = this.waitFree;
    if (!ops) {
      // A deferred update reads this step's gradients during the next step: made outside the step's scope, released once applied.
      const kept = this.overlap ? zeroGradients(graph.config, be) : null;
      // One scope a step: its gradients and activations go back to the device allocator.
      const result = be.scope(() => {
        const grads = kept ?? zeroGradients(graph.config, be);
        let sum = 0;
        for (let micro = 0; micro < microbatches; micro++) {
          const b = batch(micro);
          sum += be.scope(() => lossAndGradients(graph, b.tokens, b.rows, grads, lossScale).lossSum);
        }
        const gradNorm = clipGradNorm(be, grads, this.clipNorm);
        this.finishUpdate(grads, lr, null, kept ? [...kept.values()] : null);
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
      this.finishUpdate(grads, lr, factor, null);
    });
    this.queued.push({ step, microbatches });
  }

  /**
   * The results of the steps run since the last call, in order (the loss and the norm before clipping:
   * neither depends on a deferred update, so nothing is flushed here). Wait-free: one wait for the device
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

  /** Apply what is deferred, and give the kept gradients back to the device allocator. */
  dispose(): void {
    this.flush();
    if (this.graph.hooks === this.hooks) this.graph.hooks = null;
    for (const t of this.owned) this.be.release(t);
  }
}

/**
 * Deferred AdamW's groups, in the order the next forward reads them:
 * - 0: the embeddings (wte, wpe), and every parameter whose gradient the next step's first microbatch
 *   sets to zero before its forward (the wait-free path zeroes those not in overwrittenGradients —
 *   LayerNorm weights, biases — before the forward starts): applied at once, at the end of the step;
 * - 1 + i: the rest of block i (its four weight matrices), before block i's forward;
 * - last: the rest (the output table when untied), before the output layer.
 */
export function updateGroups(graph: TrainingGraph): string[][] {
  const names = [...parameterShapes(graph.config).keys()], overwritten = overwrittenGradients(graph);
  const first = names.filter((n) => n === 'wte.weight' || n === 'wpe.weight' || !overwritten.has(n));
  const taken = new Set(first);
  const blocks = graph.params.blocks.map((_, i) => names.filter((n) => !taken.has(n) && n.startsWith(`blocks.${i}.`)));
  for (const g of blocks) for (const n of g) taken.add(n);
  return [first, ...blocks, names.filter((n) => !taken.has(n))];
}
