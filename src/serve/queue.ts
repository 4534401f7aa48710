import { spanTokenLogProbs } from '../eval/score.js';
import { generate, type GenerateOptions, type GenerateResult, type TextDecoding } from '../generate/generate.js';
import type { MptModel } from '../model/mpt.js';
import type { TokenLogProbs } from '../util/log-probs.js';

/** One request's share of the work: its prompts (rows) and its generation settings. */
export interface Job {
  prompts: number[][];
  options: Omit<GenerateOptions, 'onText' | 'signal' | 'onWarning' | 'allowBeyondMaxSeqLen'>;
  /** Streaming: each row's new text (rows numbered within this job). */
  onText?: (row: number, text: string) => void;
  /** Aborted when the client goes away: the job's rows stop (its whole run, unless it shares one). */
  signal: AbortSignal;
  /** Score the prompts too (echo + logprobs), with this many alternatives per token. */
  promptLogprobs?: number;
}

/** A row's generation, and with `promptLogprobs` the scores of its prompt tokens after the first. */
export interface JobResult extends GenerateResult {
  promptLogprobs?: TokenLogProbs[];
}

type Entry = { job: Job; resolve: (r: JobResult[]) => void; reject: (e: unknown) => void };

/**
 * Requests take turns at the one model, in arrival order. When the model frees up, the first waiting
 * job runs, and other waiting jobs join its batch (one left-padded `generate` call) when that cannot
 * change what any of them gets:
 * - the same settings (max_tokens, stop, sampling), since `generate` takes one set for all rows;
 * - no seed, or greedy: a seeded sampler draws rows from one random stream, so a seeded request's
 *   text would depend on who shared its batch;
 * - the longest prompt plus max_tokens fits the context, so no row is cut short by another's length.
 * A job whose client has gone stops its run, or, in a shared run, only drops its rows' text.
 */
export class GenerationQueue {
  private readonly waiting: Entry[] = [];
  private running: Promise<void> | null = null;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly model: MptModel, private readonly tokenizer: TextDecoding, private readonly maxBatchRows: number) {}

  submit(job: Job): Promise<JobResult[]> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ job, resolve, reject });
      this.pump();
    });
  }

  /** Jobs waiting or running. */
  get size(): number {
    return this.waiting.length + (this.running ? 1 : 0);
  }

  /** Resolves once nothing is waiting or running (for a graceful shutdown). */
  idle(): Promise<void> {
    if (this.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private pump(): void {
    if (this.running) return;
    // Jobs whose clients left while waiting never run.
    for (let i = this.waiting.length - 1; i >= 0; i--) {
      const entry = this.waiting[i];
      if (entry.job.signal.aborted) { this.waiting.splice(i, 1); entry.reject(entry.job.signal.reason); }
    }
    if (this.waiting.length === 0) {
      for (const wake of this.idleWaiters.splice(0)) wake();
      return;
    }
    const batch = this.takeBatch();
    this.running = this.run(batch).finally(() => {
      this.running = null;
      this.pump();
    });
  }

  private takeBatch() {
    const first = this.waiting.shift()!;
    const batch = [first];
    if (!shareable(first.job)) return batch;
    const key = settingsKey(first.job);
    let rows = first.job.prompts.length;
    let longest = Math.max(...first.job.prompts.map((p) => p.length));
    for (let i = 0; i < this.waiting.length; ) {
      const { job } = this.waiting[i];
      const jobLongest = Math.max(...job.prompts.map((p) => p.length));
      const fits = Math.max(longest, jobLongest) + job.options.maxNewTokens <= this.model.config.maxSeqLen;
      if (shareable(job) && settingsKey(job) === key && fits && rows + job.prompts.length <= this.maxBatchRows) {
        batch.push(this.waiting.splice(i, 1)[0]);
        rows += job.prompts.length;
        longest = Math.max(longest, jobLongest);
      } else {
        i++;
      }
    }
    return batch;
  }

  private async run(batch: Entry[]): Promise<void> {
    // Rows of the shared run: job j owns rows offsets[j] … offsets[j] + its prompt count - 1.
    const offsets: number[] = [];
    const owner: number[] = [];
    batch.forEach(({ job }, j) => {
      offsets.push(owner.length);
      for (let i = 0; i < job.prompts.length; i++) owner.push(j);
    });
    // The run stops only when every job in it has been abandoned.
    const controller = new AbortController();
    const abandonIfAllGone = () => {
      if (batch.every(({ job }) => job.signal.aborted)) controller.abort(batch[0].job.signal.reason);
    };
    batch.forEach(({ job }) => job.signal.addEventListener('abort', abandonIfAllGone));
    abandonIfAllGone();
    // A job is answered as soon as all its rows have ended, not when the whole shared run does.
    const done: JobResult[][] = batch.map(({ job }) => new Array(job.prompts.length));
    const left = batch.map(({ job }) => job.prompts.length);
    try {
      const prompts = batch.flatMap(({ job }) => job.prompts);
      // Prompt scores first (one batched forward over the prompts, the same settings key for all jobs here).
      const scores = promptScores(this.model, prompts, batch[0].job.promptLogprobs);
      const withScores = (row: number, result: GenerateResult): JobResult => (scores ? { ...result, promptLogprobs: scores[row] } : result);
      await generate(this.model, this.tokenizer, prompts, {
        ...batch[0].job.options,
        signal: controller.signal,
        onText: (row, text) => {
          const { job } = batch[owner[row]];
          if (!job.signal.aborted) job.onText?.(row - offsets[owner[row]], text);
        },
        onRowDone: (row, result) => {
          const j = owner[row], { job, resolve } = batch[j];
          done[j][row - offsets[j]] = withScores(row, result);
          if (--left[j] === 0 && !job.signal.aborted) resolve(done[j]);
        },
      });
      // Every row has reported through onRowDone, so every job still wanted has its answer.
      for (const { job, reject } of batch) if (job.signal.aborted) reject(job.signal.reason);
    } catch (error) {
      for (const { reject } of batch) reject(error);
    } finally {
      batch.forEach(({ job }) => job.signal.removeEventListener('abort', abandonIfAllGone));
    }
  }
}

const shareable = (job: Job) => job.options.temperature === 0 || job.options.seed === undefined;

function settingsKey(job: Job): string {
  const o = job.options;
  return JSON.stringify([
    o.maxNewTokens, o.temperature, o.topK ?? 0, o.topP ?? 1, o.repetitionPenalty ?? 1, o.eosId, o.stop ?? [], o.logprobs ?? null, job.promptLogprobs ?? null,
  ]);
}

/**
 * Each prompt's token scores after its first token (a one-token prompt has none), or null when not
 * asked. A forward pass of its own, through eval's span scorer, so generation keeps its usual path.
 */
function promptScores(model: MptModel, prompts: number[][], k: number | undefined): TokenLogProbs[][] | null {
  if (k === undefined) return null;
  const scored = prompts.map((ids, row) => ({ ids, row })).filter(({ ids }) => ids.length > 1);
  const spans = spanTokenLogProbs(model, scored.map(({ ids }) => ({ ids, from: 1 })), k);
  const scores: TokenLogProbs[][] = prompts.map(() => []);
  scored.forEach(({ row }, i) => { scores[row] = spans[i]!; });
  return scores;
}
