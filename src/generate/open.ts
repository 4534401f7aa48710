import { selectBackend, type DeviceChoice } from '../backend/select.js';
import { openModelFolder, type ModelFolder } from '../io/model-folder.js';
import { tokenizerFileFor } from '../io/tokenizer-location.js';
import { loadModel, type WeightDType } from '../model/load.js';
import type { MptModel } from '../model/mpt.js';
import { Tokenizer } from '../tokenizer/index.js';
import { UserError } from '../util/errors.js';
import { DEFAULT_MODEL_DIR, hasDefaultModel } from './default-model.js';

export interface OpenOptions {
  /** A model folder or a Hugging Face hub name; undefined: the embedded default model. */
  model?: string;
  device?: DeviceChoice;
  /** Weights on the CPU (float32 or bfloat16), activations on CUDA (bfloat16 or float32). */
  dtype?: WeightDType;
  threads?: number;
  progress?: boolean;
  /** Called with notes a person should see (which device `auto` picked). */
  onNote?: (message: string) => void;
}

export interface OpenModel {
  model: MptModel;
  tokenizer: Tokenizer;
  folder: Pick<ModelFolder, 'dir' | 'format' | 'weightsDtype' | 'rawConfig'>;
}

/** Open a model folder (or hub name), load its weights onto the chosen device, and its tokenizer. */
export async function openForInference(options: OpenOptions): Promise<OpenModel> {
  const folder = await openModelFolder(resolveModelName(options.model));
  try {
    const { backend, note } = await selectBackend({ device: options.device ?? 'auto', cudaDType: options.dtype === 'float32' ? 'float32' : 'bfloat16', threads: options.threads });
    if (note) options.onNote?.(note);
    // The CPU keeps weights as asked (or as stored); CUDA stores them in its compute dtype.
    const dtype = backend.name === 'cpu' ? options.dtype : (backend.activationDType as WeightDType);
    const model = await loadModel(folder, backend, { dtype, progress: options.progress });
    const tokenizer = Tokenizer.fromFile(await tokenizerFileFor(folder));
    return { model, tokenizer, folder };
  } finally {
    await folder.close();
  }
}

/** The tokenizer of a model folder (its own tokenizer.json, or the one its config names). */
export async function tokenizerOf(folder: ModelFolder): Promise<Tokenizer> {
  return Tokenizer.fromFile(await tokenizerFileFor(folder));
}

/** The tokenizer.json of a model (folder, hub name, or the default model) without loading its weights. */
export async function tokenizerFileOf(model: string | undefined): Promise<string> {
  const folder = await openFolder(model);
  try {
    return await tokenizerFileFor(folder);
  } finally {
    await folder.close();
  }
}

/** The tokenizer of a model without loading its weights. */
export async function openTokenizer(model: string | undefined): Promise<Tokenizer> {
  return Tokenizer.fromFile(await tokenizerFileOf(model));
}

/** Only the folder's headers: for commands that need no weights (tokenize, info). */
export async function openFolder(model: string | undefined): Promise<ModelFolder> {
  return openModelFolder(resolveModelName(model));
}

/** The model to open: the one named, else the embedded default model. */
export function resolveModelName(model: string | undefined): string {
  if (model) return model;
  if (hasDefaultModel()) return DEFAULT_MODEL_DIR;
  throw new UserError(`no --model given and the embedded default model is missing (${DEFAULT_MODEL_DIR}): pass a model folder or a Hugging Face name such as mosaicml/mpt-1b-redpajama-200b`);
}
