import { sideStreamAdamw, waitFreeOps, type AdamwTensors, type DeviceScalar, type Tensor, type TrainingBackend } from '../backend/backend.js';

/**
 * AdamW on float32 master weights with float32 moments, in the two flavours llm-foundry offers:
 * - `adamw`: torch.optim.AdamW, decay = lr · weight_decay.
 * - `decoupled_adamw`: Composer's DecoupledAdamW, decay = weight_decay · lr / initial lr, i.e. the
 *   weight decay follows the schedule but is not multiplied by the learning rate itself
 *   (weight_decay is an absolute rate per step at the peak lr).
 * Both apply the decay to the parameter before, and apart from, the Adam update.
 */
export type OptimizerKind = 'adamw' | 'decoupled_adamw';

export interface OptimizerSettings {
  kind: OptimizerKind;
  /** The peak (initial) learning rate; the schedule multiplies it. */
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
}

export class AdamW {
  readonly m = new Map<string, Tensor>();
  readonly v = new Map<string, Tensor>();
  /** Steps taken so far (torch's `step` state; the next update uses step + 1). */
  step = 0;

  /**
   * `params`: the float32 master weights by canonical name. `computeCopies`: lower-precision copies
   * the model computes with (amp_bf16), refreshed after every update.
   */
  constructor(
    private readonly backend: TrainingBackend, readonly settings: OptimizerSettings,
    readonly params: Map<string, Tensor>, private readonly computeCopies: Map<string, Tensor> | null = null,
  ) {
    for (const [name, p] of params) {
      if (p.dtype !== 'float32') throw new Error(`AdamW: master weight ${name} is ${p.dtype}, expected float32`);
      this.m.set(name, backend.zeros(p.shape, 'float32'));
      this.v.set(name, backend.zeros(p.shape, 'float32'));
    }
  }

  /**
   * One update with learning rate `lr` (the scheduled value) from the (already clipped) gradients, or,
   * with `gradScale` (wait-free backends: WaitFreeTrainingOps.gradNormOnDevice's clipping factor), from
   * the gradients times that device value, applied as they are read.
   */
  update(grads: Map<string, Tensor>, lr: number, gradScale: DeviceScalar | null = null): void {
    this.flush(); // an update recorded by defer() comes first
    this.step++;
    this.apply(this.operands(grads, [...this.params.keys()]), this.hyperparameters(lr), gradScale);
  }

  /** The update recorded by defer() and not yet applied in full. */
  private deferred: DeferredUpdate | null = null;

  /**
   * Record the update `update(grads, lr, gradScale)` would make, to be applied group by group
   * (`groups`: parameter names, every parameter in exactly one) by applyDeferred(i) or flush(): the
   * values are the same, only when each parameter is stepped differs (deferred, overlapped AdamW:
   * step.ts). The gradients, the moments and `gradScale` must stay unchanged until then: `gradScale`
   * is read when the group runs, so pass a persistent copy. The first group (what the next forward
   * needs first) is applied at once: nothing runs before it that it could overlap with. With
   * `sideStream` (a backend's SideStreamAdamwOps) the other groups are queued on its second stream now,
   * after everything queued so far, and applyDeferred(i) makes the main stream wait for group i;
   * without it applyDeferred(i) runs group i. `release`: tensors (the gradients of the path that
   * makes them every step) given back once the update is applied in full.
   */
  defer(grads: Map<string, Tensor>, lr: number, gradScale: DeviceScalar | null, groups: readonly string[][],
    options: { sideStream: boolean; release?: readonly Tensor[] }): void {
    this.flush();
    const all = groups.flat();
    if (all.length !== this.params.size || new Set(all).size !== all.length || all.some((name) => !this.params.has(name))) {
      throw new Error(`AdamW.defer: the groups name ${all.length} parameters (${new Set(all).size} distinct), the optimizer has ${this.params.size}`);
    }
    this.step++;
    const hyper = this.hyperparameters(lr);
    const operands = groups.map((names) => this.operands(grads, names));
    const side = options.sideStream ? sideStreamAdamw(this.backend) : null;
    if (options.sideStream && !side) throw new Error(`AdamW.defer: the ${this.backend.name} backend has no side stream for AdamW`);
    this.apply(operands[0], hyper, gradScale);
    const tickets = side && operands.length > 1 ? side.adamwGroupsOnSide(operands.slice(1).map((tensors) => ({ tensors, ...hyper, gradScale }))) : null;
    this.deferred = { operands, hyper, gradScale, done: operands.map((_, i) => i === 0), tickets, release: options.release ?? [] };
  }

  /** Whether an update recorded by defer() has groups not yet applied. */
  get hasDeferred(): boolean { return this.deferred !== null; }

  /**
   * Group `group` of the deferred update applied before whatever comes next on the main stream (run
   * here, or waited for on the side stream); nothing when it is applied already or nothing is deferred.
   */
  applyDeferred(group: number): void {
    const d = this.deferred;
    if (!d || group >= d.done.length || d.done[group]) return;
    d.done[group] = true;
    if (d.tickets) sideStreamAdamw(this.backend)!.mainWaitsFor(d.tickets[group - 1]);
    else this.apply(d.operands[group], d.hyper, d.gradScale);
    if (d.done.every(Boolean)) this.finishDeferred();
  }

  /** Apply every group of the deferred update not yet applied, in order: then the weights and moments are what update() leaves. */
  flush(): void {
    const d = this.deferred;
    if (!d) return;
    for (let g = 0; g < d.done.length; g++) this.applyDeferred(g);
  }

  private finishDeferred(): void {
    const d = this.deferred!;
    this.deferred = null;
    for (const t of d.release) this.backend.release(t);
  }

  private hyperparameters(lr: number): AdamwHyperparameters {
    const { kind, betas, eps, weightDecay } = this.settings;
    const decay = weightDecay === 0 ? 0 : kind === 'adamw' ? lr * weightDecay : weightDecay * (lr / this.settings.lr);
    return { lr, beta1: betas[0], beta2: betas[1], eps, decay, step: this.step };
  }

  private operands(grads: Map<string, Tensor>, names: readonly string[]): AdamwTensors[] {
    return names.map((name) => {
      const grad = grads.get(name);
      if (!grad) throw new Error(`AdamW: no gradient for ${name}`);
      return { param: this.params.get(name)!, grad, m: this.m.get(name)!, v: this.v.get(name)!, computeCopy: this.computeCopies?.get(name) ?? null };
    });
  }

  /** One adamwStepAll over `tensors` (CUDA: one launch, not one a parameter), on the main stream. */
  private apply(tensors: AdamwTensors[], hyper: AdamwHyperparameters, gradScale: DeviceScalar | null): void {
    if (tensors.length === 0) return;
    if (gradScale === null) {
      this.backend.adamwStepAll({ tensors, ...hyper });
    } else {
      const waitFree = waitFreeOps(this.backend);
      if (!waitFree) throw new Error(`AdamW: a device gradient scale on the ${this.backend.name} backend, which has no wait-free ops`);
      waitFree.adamwStepAll({ tensors, ...hyper, gradScale });
    }
  }
}

interface AdamwHyperparameters { lr: number; beta1: number; beta2: number; eps: number; decay: number; step: number }

/** An update recorded by AdamW.defer: its groups' operands, which are applied, and the side stream's ticket of each group after the first. */
interface DeferredUpdate {
  operands: AdamwTensors[][];
  hyper: AdamwHyperparameters;
  gradScale: DeviceScalar | null;
  done: boolean[];
  tickets: number[] | null;
  release: readonly Tensor[];
}

/**
 * Clip gradients by their global L2 norm, as torch.nn.utils.clip_grad_norm_ (Composer's
 * `gradient_clipping` with clipping_type norm): scale by max / (norm + 1e-6) when that is below 1.
 * Returns the norm before clipping.
 */
export function clipGradNorm(backend: TrainingBackend, grads: Map<string, Tensor>, maxNorm: number | null): number {
  // One reduction over all gradients: on CUDA one round trip to the host instead of one per tensor.
  const norm = Math.sqrt(backend.sumOfSquaresAll([...grads.values()]));
  if (maxNorm !== null) {
    const coef = maxNorm / (norm + 1e-6);
    if (coef < 1) for (const g of grads.values()) backend.scaleInPlace(g, coef);
  }
  return norm;
}
