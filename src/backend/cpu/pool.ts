import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { runTask, taskSize, usesWasm, type ParallelTask } from './kernels/index.js';
import { sharedHeap } from './wasm/heap.js';

/**
 * Splits a kernel across the main thread and worker threads over shared memory. The main thread does
 * the first share itself and then blocks on a latch (Atomics.wait), so ops stay synchronous and the
 * model code reads as plain calls. Small tasks run on the main thread alone: a round trip to a worker
 * costs tens of microseconds.
 */
const MIN_WORK_PER_THREAD = 1 << 16;
/** How long a new worker may take to load its code and report ready before the pool gives up. */
const WORKER_START_TIMEOUT_MS = 60_000;

export class CpuPool {
  private workers: Worker[] | undefined;
  /** Whether the workers have been sent the wasm heap's memory and kernels (before their first wasm task). */
  private workersHaveWasm = false;
  private readonly latch = new Int32Array(new SharedArrayBuffer(4));
  private readonly errors = new Int32Array(new SharedArrayBuffer(4));

  constructor(readonly threads: number = defaultThreads()) {}

  run(task: ParallelTask, workPerItem: number): void {
    const items = taskSize(task);
    const parts = Math.max(1, Math.min(this.threads, items, Math.floor((items * workPerItem) / MIN_WORK_PER_THREAD)));
    if (parts === 1) {
      runTask(task, 0, items);
      return;
    }
    const workers = this.start();
    if (usesWasm(task) && !this.workersHaveWasm) {
      const heap = sharedHeap();
      if (!heap) throw new Error('a wasm task without a wasm heap');
      for (const worker of workers) worker.postMessage({ install: { module: heap.module, memory: heap.memory } });
      this.workersHaveWasm = true;
    }
    const bounds = Array.from({ length: parts + 1 }, (_, i) => Math.round((i * items) / parts));
    Atomics.store(this.latch, 0, parts - 1);
    for (let i = 1; i < parts; i++) {
      workers[i - 1].postMessage({ task, start: bounds[i], end: bounds[i + 1], part: i, latch: this.latch, errors: this.errors });
    }
    runTask(task, bounds[0], bounds[1], 0);
    for (let left = Atomics.load(this.latch, 0); left !== 0; left = Atomics.load(this.latch, 0)) {
      Atomics.wait(this.latch, 0, left);
    }
    if (Atomics.exchange(this.errors, 0, 0) !== 0) throw new Error('a CPU worker failed (its error is on stderr)');
  }

  /**
   * Start the workers and wait until each has its message handler in place. A worker that fails to
   * load its code (or loads an empty file, as happens while `tsc` rewrites dist/) would otherwise
   * never count down the latch, and the main thread, blocked in Atomics.wait, would hang for ever.
   */
  private start(): Worker[] {
    if (!this.workers) {
      const ready = new Int32Array(new SharedArrayBuffer(4 * (this.threads - 1)));
      const workers = Array.from({ length: this.threads - 1 }, (_, index) => {
        const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: { ready, index } });
        worker.unref(); // never keep the process alive
        return worker;
      });
      const deadline = Date.now() + WORKER_START_TIMEOUT_MS;
      for (let i = 0; i < workers.length; i++) {
        while (Atomics.load(ready, i) === 0 && Date.now() < deadline) Atomics.wait(ready, i, 0, 100);
        if (Atomics.load(ready, i) !== 1) {
          for (const w of workers) void w.terminate();
          throw new Error(`CPU worker thread ${i + 1} did not start within ${WORKER_START_TIMEOUT_MS / 1000} s (its error, if any, is on stderr)`);
        }
      }
      this.workers = workers;
    }
    return this.workers;
  }
}

function defaultThreads(): number {
  const fromEnv = Number(process.env.MPT_THREADS);
  return Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : availableParallelism();
}
