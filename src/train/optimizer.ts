import { waitFreeOps, type DeviceScalar, type Tensor, type TrainingBackend } from '../backend/backend.js';

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
    this.step++;
    const { kind, betas, eps, weightDecay } = this.settings;
    const decay = weightDecay === 0 ? 0 : kind === 'adamw' ? lr * weightDecay : weightDecay * (lr / this.settings.lr);
    const tensors = [...this.params].map(([name, param]) => {
      const grad = grads.get(name);
      if (!grad) throw new Error(`AdamW: no gradient for ${name}`);
      return { param, grad, m: this.m.get(name)!, v: this.v.get(name)!, computeCopy: this.computeCopies?.get(name) ?? null };
    });
    // All parameters at once (CUDA: one launch, not one a parameter).
    const args = { tensors, lr, beta1: betas[0], beta2: betas[1], eps, decay, step: this.step };
    if (gradScale === null) {
      this.backend.adamwStepAll(args);
    } else {
      const waitFree = waitFreeOps(this.backend);
      if (!waitFree) throw new Error(`AdamW: a device gradient scale on the ${this.backend.name} backend, which has no wait-free ops`);
      waitFree.adamwStepAll({ ...args, gradScale });
    }
  }
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
