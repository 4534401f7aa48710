import { parseArgs } from 'node:util';
import { CpuBackend } from '../backend/cpu/index.js';
import { MPT_1B_REDPAJAMA_200B } from '../model/config.js';
import { loadModel } from '../model/load.js';
import { openModelFolder } from '../io/model-folder.js';
import { benchInference } from './cpu-bench.js';
import { randomBf16Model } from './cpu-random-model.js';

/**
 * Run the CPU inference benchmark from a shell until `mpt bench` is wired to it:
 *   node dist/src/bench/cpu-run.js --preset mpt-1b [--prompt 16] [--new 32] [--batch 1] [--threads N] [--js]
 *   node dist/src/bench/cpu-run.js --model <folder> …
 * Prints one JSON line: the result, the model, the thread count and the kernels used.
 */
const { values } = parseArgs({
  options: {
    preset: { type: 'string' }, model: { type: 'string' },
    prompt: { type: 'string', default: '16' }, new: { type: 'string', default: '32' }, batch: { type: 'string', default: '1' },
    threads: { type: 'string' }, js: { type: 'boolean', default: false },
  },
});
const backend = new CpuBackend({ threads: values.threads ? Number(values.threads) : undefined, wasm: !values.js });
let model;
if (values.preset === 'mpt-1b') model = randomBf16Model(MPT_1B_REDPAJAMA_200B, backend);
else if (values.model) {
  const folder = await openModelFolder(values.model);
  try {
    model = await loadModel(folder, backend);
  } finally {
    await folder.close();
  }
}
else throw new Error('give --preset mpt-1b or --model <folder>');
const result = await benchInference(model, { promptTokens: Number(values.prompt), newTokens: Number(values.new), batch: Number(values.batch) });
console.log(JSON.stringify({ model: values.preset ?? values.model, threads: backend.pool.threads, kernels: values.js ? 'js' : 'wasm', ...result }));
