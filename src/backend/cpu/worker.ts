import { parentPort } from 'node:worker_threads';
import { runTask, type ParallelTask } from './kernels/index.js';

/** A CPU worker: runs its share of a kernel on shared memory, then counts down the shared latch. */
interface Job { task: ParallelTask; start: number; end: number; latch: Int32Array; errors: Int32Array }

parentPort!.on('message', ({ task, start, end, latch, errors }: Job) => {
  try {
    runTask(task, start, end);
  } catch (error) {
    // The main thread is blocked on the latch and cannot receive a message now: count the failure
    // for it to see, and leave the details on stderr.
    Atomics.add(errors, 0, 1);
    process.stderr.write(`mpt CPU worker: ${(error as Error)?.stack ?? error}\n`);
  } finally {
    Atomics.sub(latch, 0, 1);
    Atomics.notify(latch, 0);
  }
});
