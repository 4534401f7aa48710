import { PythonIntSet } from './python-int-set.js';
import type { PythonRandom } from './python-random.js';

/**
 * llm-foundry's get_fewshot_sample_idxs, step for step: draw min(n - 1, k) distinct indices with
 * random.sample; if the example itself was drawn, drop it and draw a replacement with random.choice
 * until it is neither the example nor already drawn. One generator is shared by all examples of a
 * task in order, so every example gets its own few-shot set and the whole run is fixed by the seed.
 * Returned in the order llm-foundry iterates its set of indices (see PythonIntSet).
 */
export function fewshotIndices(datasetSize: number, numFewshot: number, exampleIndex: number, rng: PythonRandom): number[] {
  const k = Math.min(datasetSize - 1, numFewshot);
  const picked = PythonIntSet.from(rng.sampleRange(datasetSize, k));
  if (picked.has(exampleIndex)) {
    picked.delete(exampleIndex);
    if (picked.size >= datasetSize - 1) return picked.values();
    let replacement = rng.choiceRange(datasetSize);
    while (picked.has(replacement) || replacement === exampleIndex) replacement = rng.choiceRange(datasetSize);
    picked.add(replacement);
  }
  return picked.values();
}
