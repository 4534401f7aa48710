// How close can a model with bf16 weights come to the float32 reference of mosaic-gpt-tiny? The CPU
// backend computes in float32 throughout; this loads the fixture once with its float32 weights and once
// rounded to bf16, and compares every position's top-5 with the reference (issue 3's bf16 criterion:
// same top-5 ids, logits within 2e-2). Usage, after `npx tsc -p .`: node bench/tools/bf16-weight-floor.mjs
import { readFileSync } from 'node:fs';
import { CpuBackend, openModelFolder, loadModel, topLogits } from '../../dist/src/index.js';

const dir = new URL('../../../shared/fixtures/mosaic-gpt-tiny/', import.meta.url).pathname;
const fixtures = process.env.MPT_FIXTURES ? `${process.env.MPT_FIXTURES}/mosaic-gpt-tiny/` : dir;
const reference = JSON.parse(readFileSync(`${fixtures}reference.json`, 'utf8'));
for (const dtype of ['float32', 'bfloat16']) {
  const backend = new CpuBackend();
  const folder = await openModelFolder(fixtures);
  const model = await loadModel(folder, backend, { dtype });
  await folder.close();
  const ids = Int32Array.from(reference.prompt_ids);
  const logits = backend.download(model.forward(ids, model.newCache(1, ids.length), { logits: 'all' }));
  const vocab = model.config.vocabSize;
  let otherIds = 0, worst = 0;
  reference.top5_every_position.forEach((top5, pos) => {
    const got = topLogits(logits.subarray(pos * vocab, (pos + 1) * vocab), 5);
    if (got.some(([id], i) => id !== top5[i][0])) otherIds++;
    got.forEach(([, logit], i) => { worst = Math.max(worst, Math.abs(logit - top5[i][1])); });
  });
  console.log(`${dtype} weights, float32 compute: ${otherIds} of ${reference.top5_every_position.length} positions with other top-5 ids; worst top-5 |Δlogit| ${worst.toExponential(3)}`);
}
