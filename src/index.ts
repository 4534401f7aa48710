/**
 * mpt-ts as a library: open a model, tokenize, generate, train and evaluate from TypeScript.
 * The CLI (`mpt`) is a thin layer over exactly these.
 */
export { openForInference, openFolder, openTokenizer, tokenizerOf, type OpenModel, type OpenOptions } from './generate/open.js';
export { generate, type GenerateOptions, type GenerateResult, type FinishReason } from './generate/generate.js';
export { sampleToken, argmax, topLogits, type SamplingOptions } from './generate/sampling.js';
export { Tokenizer, TokenizerPool, encodeParallel } from './tokenizer/index.js';
export { MptModel, type ForwardOptions } from './model/mpt.js';
export { KVCache } from './model/kv-cache.js';
export { loadModel, modelFromTensors, type LoadOptions, type WeightDType } from './model/load.js';
export { MPT_1B_REDPAJAMA_200B, parameterCount, parameterShapes, type MptConfig } from './model/config.js';
export { openModelFolder, type ModelFolder, type TensorSource } from './io/model-folder.js';
export { selectBackend, type DeviceChoice } from './backend/select.js';
export { CpuBackend } from './backend/cpu/index.js';
export type { Backend, Tensor, DType } from './backend/backend.js';
export { MptServer, type ServeOptions } from './serve/index.js';
export { trainFromYaml } from './train/from-yaml.js';
export { exportCheckpoint } from './train/export.js';
export { evaluatePerplexity, evaluateIclTasks, loadIclTasks } from './eval/index.js';
export { prepareDataset, openMixture } from './data/index.js';
export { UserError, FormatError, ConfigError } from './util/errors.js';
export { DEFAULT_MODEL_DIR } from './generate/default-model.js';
