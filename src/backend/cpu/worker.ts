import { parentPort, workerData } from 'node:worker_threads';
import { runTask, type ParallelTask } from './kernels/index.js';
import { installKernels } from './wasm/runtime.js';

/**
 * A CPU worker: runs its share of a kernel on shared memory, then counts down the shared latch. Before
 * its first wasm task it is sent the heap's memory and the compiled kernels to instantiate over it.
 */
interface Job { task: ParallelTask; start: number; end: number; part: number; latch: Int32Array; errors: Int32Array }
interface Install { install: { module: WebAssembly.Module; memory: WebAssembly.Memory } }

parentPort!.on('message', (message: Job | Install) => {
  if ('install' in message) {
    try {
      installKernels(message.install.module, message.install.memory);
    } catch (error) {
      // Stay alive: this worker's wasm tasks will then fail (and say so) instead of hanging the pool.
      process.stderr.write(`mpt CPU worker: cannot instantiate the wasm kernels: ${(error as Error)?.message ?? error}\n`);
    }
    return;
  }
  const { task, start, end, part, latch, errors } = message;
  try {
    runTask(task, start, end, part);
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

// Tell the pool this worker's handler is in place (it waits for this before sending any work).
const { ready, index } = workerData as { ready: Int32Array; index: number };
Atomics.store(ready, index, 1);
Atomics.notify(ready, index);
