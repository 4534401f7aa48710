// The fixture's training reference (fixtures README, `train` and `adamw`), shared by the CPU and CUDA
// training tests: the batch, and the steps 2–6 that both replay the same way.
import { readFileSync } from 'node:fs';
import type { Backend, TrainingBackend } from '../src/backend/backend.js';
import type { MptConfig } from '../src/model/config.js';
import { lossAndGradients, zeroGradients } from '../src/model/backward.js';
import type { TrainingGraph } from '../src/model/training-forward.js';
import { clipGradNorm, type AdamW } from '../src/train/optimizer.js';
import { fixture } from './fixtures.js';

export interface TrainingReference {
  train: { input_ids: number[][]; loss: number; grad_total_norm: number; grads: Record<string, { norm: number; index: number[]; value: number[] }> };
  adamw: {
    lr: number; betas: [number, number]; eps: number; weight_decay: number; clip_grad_norm: number;
    params_after_first_step_at_grad_index: Record<string, number[]>; losses_steps_2_to_6: number[];
  };
}

export const referenceDir = fixture('mosaic-gpt-tiny');
export const ref = JSON.parse(readFileSync(`${referenceDir}/reference.json`, 'utf8')) as TrainingReference;
/** The 2×32 batch as the trainer takes it, and the number of tokens its loss averages over. */
export const rows = ref.train.input_ids;
export const ids = Int32Array.from(rows.flat());
export const tokens = rows.length * (rows[0].length - 1);

/** After the first AdamW step: steps 2–6 on the same batch (clip, then step), as the reference ran them; their losses. */
export function lossesOfSteps2To6(graph: TrainingGraph, config: MptConfig, backend: Backend, be: TrainingBackend, optimizer: AdamW): number[] {
  const a = ref.adamw;
  const losses: number[] = [];
  for (let step = 2; step <= 6; step++) {
    const g = zeroGradients(config, backend);
    const r = lossAndGradients(graph, ids, rows.length, g, 1 / tokens);
    losses.push(r.lossSum / r.count);
    clipGradNorm(be, g, a.clip_grad_norm);
    optimizer.update(g, a.lr);
  }
  return losses;
}
