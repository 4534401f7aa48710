import { ConfigError } from '../util/errors.js';

/**
 * Composer's learning-rate schedules as a multiplier of the peak lr, evaluated at the number of
 * batches already trained (so the first batch of a warm-up trains at lr 0, as in Composer):
 * - warm-up (all three): t / t_warmup for t < t_warmup
 * - cosine_with_warmup: alpha_f + (1 − alpha_f)·(1 + cos(π·τ))/2
 * - linear_decay_with_warmup: alpha_i + (alpha_f − alpha_i)·τ
 * - constant_with_warmup: alpha
 * with τ = (t − t_warmup)/(t_max − t_warmup) clamped to [0, 1]. All times in batches.
 */
export type ScheduleKind = 'cosine_with_warmup' | 'linear_decay_with_warmup' | 'constant_with_warmup';
export const SCHEDULE_KINDS: readonly ScheduleKind[] = ['cosine_with_warmup', 'linear_decay_with_warmup', 'constant_with_warmup'];

export interface Schedule {
  kind: ScheduleKind;
  warmup: number;
  max: number;
  alphaI: number;
  alphaF: number;
}

export function lrFactor(s: Schedule, t: number): number {
  if (t < s.warmup) return t / s.warmup;
  const span = s.max - s.warmup;
  const tau = span <= 0 ? 1 : Math.min(Math.max((t - s.warmup) / span, 0), 1);
  switch (s.kind) {
    case 'cosine_with_warmup': return s.alphaF + (1 - s.alphaF) * 0.5 * (1 + Math.cos(Math.PI * tau));
    case 'linear_decay_with_warmup': return s.alphaI + (s.alphaF - s.alphaI) * tau;
    case 'constant_with_warmup': return s.alphaI;
  }
}

export function checkScheduleKind(name: unknown, where: string): ScheduleKind {
  if (SCHEDULE_KINDS.includes(name as ScheduleKind)) return name as ScheduleKind;
  throw new ConfigError(`${where}: unknown scheduler ${JSON.stringify(name)} (expected one of ${SCHEDULE_KINDS.join(', ')})`);
}
