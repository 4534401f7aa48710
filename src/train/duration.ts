import { ConfigError } from '../util/errors.js';

/**
 * Composer time strings: `100ba` (batches = optimizer steps), `2000000tok`, `64sp` (samples), `1ep`,
 * and `0.25dur` (a fraction of max_duration). Everything becomes a count of batches, possibly
 * fractional (a warm-up of 1000 tokens is a fraction of a batch).
 */
export type TimeUnit = 'ba' | 'tok' | 'sp' | 'ep' | 'dur';
export interface Duration { value: number; unit: TimeUnit }

export function parseDuration(text: unknown, where: string): Duration {
  const s = typeof text === 'number' ? `${text}ep` : text; // Composer reads a bare integer as epochs
  const match = typeof s === 'string' ? /^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(ba|tok|sp|ep|dur)\s*$/i.exec(s) : null;
  if (!match) throw new ConfigError(`${where}: expected a duration like 100ba, 2000000tok, 64sp, 1ep or 0.5dur, got ${JSON.stringify(text)}`);
  const value = Number(match[1]);
  if (!(value >= 0)) throw new ConfigError(`${where}: ${JSON.stringify(text)} is negative`);
  return { value, unit: match[2].toLowerCase() as TimeUnit };
}

export interface BatchGeometry {
  samplesPerBatch: number;
  tokensPerBatch: number;
  /** Training samples per epoch, when the data source knows (a mixture of finite sources). */
  samplesPerEpoch: number | null;
  /** max_duration in batches, for `dur`. */
  totalBatches?: number;
}

export function toBatches(d: Duration, g: BatchGeometry, where: string): number {
  switch (d.unit) {
    case 'ba': return d.value;
    case 'tok': return d.value / g.tokensPerBatch;
    case 'sp': return d.value / g.samplesPerBatch;
    case 'ep':
      if (g.samplesPerEpoch === null) throw new ConfigError(`${where}: an epoch is undefined for this data source; give the duration in ba, tok or sp`);
      return (d.value * g.samplesPerEpoch) / g.samplesPerBatch;
    case 'dur':
      if (g.totalBatches === undefined) throw new ConfigError(`${where}: dur is a fraction of max_duration and cannot be used for max_duration itself`);
      return d.value * g.totalBatches;
  }
}
