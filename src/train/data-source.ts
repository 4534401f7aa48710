import { isAbsolute, resolve, dirname } from 'node:path';
import { openMixture, openValidationSplit } from '../data/index.js';
import { ConfigError } from '../util/errors.js';
import { byteTextEvalSet, byteTextSource, mixtureSource, type BatchSource, type EvalSet } from './batches.js';
import { checkKeys, obj } from './config.js';

const LOADER_KEYS = ['name', 'dataset', 'drop_last', 'num_workers', 'prefetch_factor', 'pin_memory', 'persistent_workers', 'timeout'];
const TEXT_KEYS = ['local', 'remote', 'split', 'shuffle', 'max_seq_len', 'shuffle_seed', 'preset', 'weights', 'eos_token_id'];
const BYTES_KEYS = ['paths', 'val_fraction', 'max_seq_len', 'max_bytes'];

/** The parts of a loader section both loaders read the same way. */
function loaderSection(loader: Record<string, unknown>, configFile: string, key: string, seqLen: number) {
  const where = `${configFile}: ${key}`;
  checkKeys(loader, LOADER_KEYS, where);
  const dataset = obj(loader.dataset, `${where}.dataset`);
  const base = dirname(resolve(configFile));
  const path = (p: unknown, k: string) => {
    if (typeof p !== 'string' || p === '') throw new ConfigError(`${where}.dataset.${k}: expected a path, got ${JSON.stringify(p)}`);
    return isAbsolute(p) ? p : resolve(base, p);
  };
  if (dataset.max_seq_len !== undefined && dataset.max_seq_len !== seqLen) {
    throw new ConfigError(`${where}.dataset.max_seq_len: ${JSON.stringify(dataset.max_seq_len)} differs from the model's max_seq_len ${seqLen}`);
  }
  const unknownName = () => new ConfigError(`${where}.name: ${JSON.stringify(loader.name)} is not a loader mpt-ts has (text: a prepared dataset; bytes: raw text files)`);
  return { where, dataset, path, unknownName };
}

/**
 * The YAML's train_loader → a BatchSource:
 *   name: text    dataset: { local: <folder from 'mpt data prepare'>, preset: redpajama | weights: {...} }
 *                 (llm-foundry's loader name; the mixture of src/data serves it)
 *   name: bytes   dataset: { paths: [files or folders], val_fraction: 0.1 }
 *                 (mpt-ts: raw bytes as tokens 0–255, for tiny models on the CPU without a tokenizer)
 */
export function openTrainData(loader: Record<string, unknown>, configFile: string, seqLen: number, globalBatch: number, seed: number, vocab: number): BatchSource {
  const { where, dataset, path, unknownName } = loaderSection(loader, configFile, 'train_loader', seqLen);
  if (loader.name === 'text') {
    checkKeys(dataset, TEXT_KEYS, `${where}.dataset`);
    if (dataset.split !== undefined && dataset.split !== 'train') throw new ConfigError(`${where}.dataset.split: the training split is "train", got ${JSON.stringify(dataset.split)}`);
    const mixture = openMixture({
      dataset: path(dataset.local, 'local'), seed: typeof dataset.shuffle_seed === 'number' ? dataset.shuffle_seed : seed, globalBatch,
      ...(dataset.weights !== undefined ? { weights: obj(dataset.weights, `${where}.dataset.weights`) as Record<string, number> } : {}),
      ...(typeof dataset.preset === 'string' ? { preset: dataset.preset } : {}),
    });
    return mixtureSource(mixture);
  }
  if (loader.name === 'bytes') {
    checkKeys(dataset, BYTES_KEYS, `${where}.dataset`);
    checkByteVocab(vocab, where);
    const paths = Array.isArray(dataset.paths) ? dataset.paths : [dataset.paths];
    return byteTextSource({
      paths: paths.map((p, i) => path(p, `paths[${i}]`)), seqLen, globalBatch, seed,
      valFraction: typeof dataset.val_fraction === 'number' ? dataset.val_fraction : 0.1,
      ...(typeof dataset.max_bytes === 'number' ? { maxBytes: dataset.max_bytes } : {}),
    });
  }
  throw unknownName();
}

/**
 * The YAML's eval_loader → the samples every evaluation scores (without one, the training data's
 * own held-out split serves):
 *   name: text    dataset: { local: <prepared folder>, split: val }   — that folder's whole held-out split
 *   name: bytes   dataset: { paths: [files or folders] }              — every seqLen-byte window of them
 */
export function openEvalData(loader: Record<string, unknown>, configFile: string, seqLen: number, vocab: number): EvalSet & { samples: number; close(): void } {
  const { where, dataset, path, unknownName } = loaderSection(loader, configFile, 'eval_loader', seqLen);
  if (loader.name === 'text') {
    checkKeys(dataset, TEXT_KEYS, `${where}.dataset`);
    if (dataset.split !== undefined && dataset.split !== 'val') {
      throw new ConfigError(`${where}.dataset.split: a prepared dataset holds out one split, "val"; got ${JSON.stringify(dataset.split)}`);
    }
    const split = openValidationSplit(path(dataset.local, 'local'));
    if (split.seqLen !== seqLen) {
      split.close();
      throw new ConfigError(`${where}.dataset.local: the dataset was prepared with ${split.seqLen}-token samples, the model trains on ${seqLen}`);
    }
    return split;
  }
  if (loader.name === 'bytes') {
    checkKeys(dataset, ['paths', 'max_seq_len', 'max_bytes'], `${where}.dataset`);
    checkByteVocab(vocab, where);
    const paths = Array.isArray(dataset.paths) ? dataset.paths : [dataset.paths];
    const set = byteTextEvalSet({
      paths: paths.map((p, i) => path(p, `paths[${i}]`)), seqLen, ...(typeof dataset.max_bytes === 'number' ? { maxBytes: dataset.max_bytes } : {}),
    });
    return { ...set, close() {} };
  }
  throw unknownName();
}

function checkByteVocab(vocab: number, where: string): void {
  if (vocab < 256) throw new ConfigError(`${where}: byte tokens need vocab_size ≥ 256, the model has ${vocab}`);
}
