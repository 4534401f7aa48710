import { promises as fs } from 'node:fs';
import { join, resolve } from 'node:path';
import type { MptConfig } from '../model/config.js';
import { FormatError, UserError } from '../util/errors.js';
import { RangeFile } from './file-range.js';
import { readHfConfig, type ConfigFormat } from './hf-config.js';
import { readSafetensorsHeader, readSafetensorsTensor } from './safetensors.js';
import { readTorchBin, readTorchBinTensor } from './torch-bin.js';
import { canonicalName, sourceName } from './weight-names.js';
import { looksLikeHubName, resolveHubModel, type HubOptions } from './hub.js';
import type { WeightDtype } from './dtype.js';
import { WEIGHT_FILES, parseWeightIndex } from './weight-files.js';

export { WEIGHT_FILES };

/** One tensor of a model folder, by canonical name, read on demand. */
export interface TensorSource {
  name: string; // canonical (a name neither format knows stays as in the file, so checks can report it)
  sourceName: string; // the name in the file
  file: string;
  dtype: WeightDtype;
  shape: number[];
  /** Exactly this tensor's bytes, little-endian. */
  read(): Promise<Buffer>;
}

export interface ModelFolder {
  dir: string;
  format: ConfigFormat;
  config: MptConfig;
  rawConfig: Record<string, unknown>;
  /** The weights' dtype, or 'mixed' when tensors differ. */
  weightsDtype: string;
  tensors: Map<string, TensorSource>;
  close(): Promise<void>;
}

export type OpenOptions = HubOptions;


/**
 * Open a Hugging Face model folder (a local path, or a hub name like `mosaicml/mpt-1b-redpajama-200b`
 * found in or downloaded to the hub cache). Only headers are read here; tensors are read by `read()`.
 */
export async function openModelFolder(pathOrHubName: string, options: OpenOptions = {}): Promise<ModelFolder> {
  const dir = await locateFolder(pathOrHubName, options);
  const configFile = join(dir, 'config.json');
  if (!(await isFile(configFile))) throw new UserError(`${dir}: no config.json (not a Hugging Face model folder)`);
  const { format, config, raw } = await readHfConfig(configFile);

  const files: RangeFile[] = [];
  const tensors = new Map<string, TensorSource>();
  const add = (source: Omit<TensorSource, 'name'>) => {
    const canonical = canonicalName(format, source.sourceName, config.tieWordEmbeddings);
    if (canonical === null) return; // lm_head.weight of a tied model: the same values as wte
    const name = canonical ?? source.sourceName;
    const previous = tensors.get(name);
    if (previous) {
      throw new FormatError(source.file, `tensor ${source.sourceName} is present twice (also as ${previous.sourceName} in ${previous.file})`);
    }
    tensors.set(name, { ...source, name });
  };
  try {
    for (const file of await weightFiles(dir)) {
      const range = await RangeFile.open(file.path);
      files.push(range);
      const sources = file.path.endsWith('.safetensors') ? await safetensorsSources(range) : await torchBinSources(range);
      for (const source of sources) {
        add(source); // first, so that a tensor held by two shards is reported as such
        if (file.expected && !file.expected.delete(source.sourceName)) {
          throw new FormatError(file.path, `tensor ${source.sourceName} is not listed for this shard in ${file.index}`);
        }
      }
      if (file.expected && file.expected.size > 0) {
        throw new FormatError(file.path, `${file.index} lists ${[...file.expected.keys()].join(', ')} in this shard, but it does not hold them`);
      }
    }
  } catch (error) {
    await Promise.all(files.map((f) => f.close()));
    throw error;
  }
  const dtypes = new Set([...tensors.values()].map((t) => t.dtype));
  return {
    dir, format, config, rawConfig: raw, tensors,
    weightsDtype: dtypes.size === 1 ? [...dtypes][0] : 'mixed',
    close: async () => { await Promise.all(files.map((f) => f.close())); },
  };
}

async function locateFolder(pathOrHubName: string, options: OpenOptions): Promise<string> {
  const local = resolve(pathOrHubName);
  const stat = await fs.stat(local).catch(() => null);
  if (stat) {
    if (!stat.isDirectory()) throw new UserError(`${local}: not a folder (expected a Hugging Face model folder with config.json)`);
    return local;
  }
  if (looksLikeHubName(pathOrHubName)) return resolveHubModel(pathOrHubName, options);
  throw new UserError(`${local}: no such folder`);
}

interface WeightFile {
  path: string;
  /** For a shard: the index that names it and the tensors it should hold (name → true). */
  index?: string;
  expected?: Map<string, true>;
}

async function weightFiles(dir: string): Promise<WeightFile[]> {
  for (const name of WEIGHT_FILES) {
    const path = join(dir, name);
    if (!(await isFile(path))) continue;
    if (!name.endsWith('.index.json')) return [{ path }];
    return shardsOf(dir, path);
  }
  throw new UserError(`${dir}: no weights (looked for ${WEIGHT_FILES.join(', ')})`);
}

async function shardsOf(dir: string, index: string): Promise<WeightFile[]> {
  const shards = new Map<string, WeightFile>();
  for (const [tensor, shard] of parseWeightIndex(index, await fs.readFile(index, 'utf8'))) {
    let file = shards.get(shard);
    if (!file) {
      const path = join(dir, shard);
      if (!(await isFile(path))) throw new UserError(`${index} names shard ${shard}, which is missing from ${dir}`);
      file = { path, index, expected: new Map() };
      shards.set(shard, file);
    }
    file.expected!.set(tensor, true);
  }
  return [...shards.values()];
}

async function safetensorsSources(file: RangeFile): Promise<Array<Omit<TensorSource, 'name'>>> {
  const header = await readSafetensorsHeader(file);
  return [...header.entries.values()].map((e) => ({
    sourceName: e.name, file: file.path, dtype: e.dtype, shape: e.shape, read: () => readSafetensorsTensor(file, e),
  }));
}

async function torchBinSources(file: RangeFile): Promise<Array<Omit<TensorSource, 'name'>>> {
  const { zip, tensors } = await readTorchBin(file);
  return tensors.map((t) => ({
    sourceName: t.name, file: file.path, dtype: t.dtype, shape: t.shape, read: () => readTorchBinTensor(zip, t),
  }));
}

async function isFile(path: string): Promise<boolean> {
  const stat = await fs.stat(path).catch(() => null);
  return stat !== null && stat.isFile();
}

/**
 * Compare a folder's tensors with the parameters a config needs; one UserError lists every missing and
 * unexpected tensor and every shape mismatch, by the names they have (or would have) in the file.
 */
export function checkTensorsAgainst(shapes: Map<string, number[]>, folder: ModelFolder): void {
  const missing: string[] = [], unexpected: string[] = [], mismatched: string[] = [];
  for (const [name, shape] of shapes) {
    const tensor = folder.tensors.get(name);
    if (!tensor) missing.push(onDiskName(folder.format, name));
    else if (!sameShape(tensor.shape, shape)) {
      mismatched.push(`${tensor.sourceName} is [${tensor.shape.join(', ')}], the config needs [${shape.join(', ')}]`);
    }
  }
  for (const tensor of folder.tensors.values()) if (!shapes.has(tensor.name)) unexpected.push(tensor.sourceName);
  if (missing.length + unexpected.length + mismatched.length === 0) return;
  const parts: string[] = [];
  if (missing.length) parts.push(`missing tensors: ${missing.join(', ')}`);
  if (unexpected.length) parts.push(`unexpected tensors: ${unexpected.join(', ')}`);
  if (mismatched.length) parts.push(`shape mismatches: ${mismatched.join('; ')}`);
  throw new UserError(`${folder.dir}: the weights do not match config.json (${parts.join('; ')})`);
}

function onDiskName(format: ConfigFormat, canonical: string): string {
  try {
    return sourceName(format, canonical);
  } catch {
    return canonical;
  }
}

const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);
