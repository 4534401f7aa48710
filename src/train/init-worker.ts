import { parentPort, workerData } from 'node:worker_threads';
import { fillInitBlock, type InitJob } from './init.js';

/**
 * One thread of a parallel fresh init (init.ts): claims blocks from the shared counter until none are
 * left, filling them in the shared tensors, and reports each block's values for the progress bar.
 */
const { tensors, seed, jobs, next } = workerData as { tensors: Float32Array[]; seed: number; jobs: InitJob[]; next: Int32Array };
for (let j = Atomics.add(next, 0, 1); j < jobs.length; j = Atomics.add(next, 0, 1)) {
  parentPort!.postMessage(fillInitBlock(tensors[jobs[j][0]], seed, jobs[j]));
}
