import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { formatDuration } from '../util/progress.js';
import { writeLossPlot } from './plot.js';

/**
 * Training metrics: one JSON object per line in `metrics.jsonl` (train records every log interval,
 * eval records every eval interval) and `loss.svg` beside it, redrawn at each write. On resume,
 * records after the checkpoint's step (from the run that was cut off) are dropped first.
 */
export interface TrainRecord {
  kind: 'train';
  step: number;
  tokens: number;
  loss: number;
  lr: number;
  gradNorm: number;
  tokensPerSecond: number;
  /** Model FLOP/s over the device's peak, when the peak is known (null on the CPU). */
  mfu: number | null;
  etaSeconds: number;
}

export interface EvalRecord { kind: 'eval'; step: number; tokens: number; loss: number; perplexity: number }
export type MetricRecord = TrainRecord | EvalRecord;

export class MetricsLog {
  readonly file: string;
  readonly plotFile: string;
  private readonly records: MetricRecord[] = [];

  constructor(folder: string, resumeStep: number) {
    mkdirSync(folder, { recursive: true });
    this.file = join(folder, 'metrics.jsonl');
    this.plotFile = join(dirname(this.file), 'loss.svg');
    if (existsSync(this.file)) {
      for (const line of readFileSync(this.file, 'utf8').split('\n')) {
        if (line.trim() === '') continue;
        try {
          const r = JSON.parse(line) as MetricRecord;
          if (r.step <= resumeStep) this.records.push(r);
        } catch {
          // A line cut short by a kill: dropped with the rest of that run's tail.
        }
      }
    }
    writeFileSync(this.file, this.records.map((r) => JSON.stringify(r) + '\n').join(''));
  }

  write(record: MetricRecord): void {
    this.records.push(record);
    appendFileSync(this.file, JSON.stringify(record) + '\n');
    writeLossPlot(this.plotFile, this.records);
  }

  get all(): readonly MetricRecord[] {
    return this.records;
  }
}

/** The console line of a train record. */
export function formatTrainLine(r: TrainRecord, maxSteps: number): string {
  const tokens = r.tokens >= 1e9 ? `${(r.tokens / 1e9).toFixed(2)}B` : r.tokens >= 1e6 ? `${(r.tokens / 1e6).toFixed(2)}M` : `${r.tokens}`;
  return [
    `step ${r.step}/${maxSteps}`, `tokens ${tokens}`, `loss ${r.loss.toFixed(4)}`, `lr ${r.lr.toExponential(3)}`,
    `grad norm ${r.gradNorm.toFixed(3)}`, `${Math.round(r.tokensPerSecond)} tok/s`,
    `MFU ${r.mfu === null ? 'n/a' : (100 * r.mfu).toFixed(1) + '%'}`, `ETA ${formatDuration(r.etaSeconds)}`,
  ].join('  ');
}

export function formatEvalLine(r: EvalRecord): string {
  return `eval  step ${r.step}  loss ${r.loss.toFixed(4)}  perplexity ${r.perplexity.toFixed(2)}`;
}
