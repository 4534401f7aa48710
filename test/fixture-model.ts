import { CpuBackend } from '../src/backend/cpu/index.js';
import { openModelFolder } from '../src/io/model-folder.js';
import { loadModel } from '../src/model/load.js';
import type { MptModel } from '../src/model/mpt.js';
import { fixture } from './fixtures.js';

const loaded = new Map<string, Promise<MptModel>>();

/** A fixture model folder loaded once per test file onto the CPU backend (float32 reference). */
export function fixtureModel(name = 'mosaic-gpt-tiny', backend = new CpuBackend()): Promise<MptModel> {
  let model = loaded.get(name);
  if (!model) {
    model = (async () => {
      const folder = await openModelFolder(fixture(name));
      try {
        return await loadModel(folder, backend);
      } finally {
        await folder.close();
      }
    })();
    loaded.set(name, model);
  }
  return model;
}
