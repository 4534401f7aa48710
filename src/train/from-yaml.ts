import { CpuBackend } from '../backend/cpu/index.js';
import type { Backend } from '../backend/backend.js';
import { openModelFolder } from '../io/model-folder.js';
import { ConfigError } from '../util/errors.js';
import { readTrainConfig, resolveRun } from './config.js';
import { openEvalData, openTrainData } from './data-source.js';
import { train, type TrainOptions, type TrainResult } from './loop.js';

/** `mpt train CONFIG.yaml [key=value …]` as a library call: parse, open the data, run. */
export async function trainFromYaml(
  file: string, overrides: string[] = [], options: Partial<TrainOptions> & { device?: 'cpu' } = {},
): Promise<TrainResult> {
  const parsed = readTrainConfig(file, overrides);
  if (parsed.settings.pretrained) {
    const folder = await openModelFolder(parsed.settings.pretrained);
    parsed.settings.model = folder.config;
    parsed.settings.run.format = folder.format;
    await folder.close();
    if (parsed.settings.seqLen > parsed.settings.model.maxSeqLen) {
      throw new ConfigError(`${file}: max_seq_len ${parsed.settings.seqLen} exceeds the pretrained model's ${parsed.settings.model.maxSeqLen}`);
    }
  }
  const s = parsed.settings;
  const source = openTrainData(parsed.trainLoader, file, s.seqLen, s.globalBatch, s.seed, s.model.vocabSize);
  let evalSet: ReturnType<typeof openEvalData> | null = null;
  try {
    evalSet = parsed.evalLoader ? openEvalData(parsed.evalLoader, file, s.seqLen, s.model.vocabSize) : null;
    const run = resolveRun(parsed, source.samplesPerEpoch);
    const backend: Backend = options.backend ?? new CpuBackend();
    const data = evalSet ? { ...source, validation: evalSet, notices: [...source.notices, `evaluation: ${evalSet.samples} samples of the eval_loader`] } : source;
    return await train(run, data, { ...options, backend });
  } finally {
    source.close();
    evalSet?.close();
  }
}
