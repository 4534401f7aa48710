import { isAbsolute, resolve, dirname } from 'node:path';
import { openMixture } from '../data/index.js';
import { ConfigError } from '../util/errors.js';
import { byteTextSource, mixtureSource, type BatchSource } from './batches.js';
import { checkKeys, obj } from './config.js';

/**
 * The YAML's train_loader → a BatchSource:
 *   name: text    dataset: { local: <folder from 'mpt data prepare'>, preset: redpajama | weights: {...} }
 *                 (llm-foundry's loader name; the mixture of src/data serves it)
 *   name: bytes   dataset: { paths: [files or folders], val_fraction: 0.1 }
 *                 (mpt-ts: raw bytes as tokens 0–255, for tiny models on the CPU without a tokenizer)
 */
export function openTrainData(loader: Record<string, unknown>, configFile: string, seqLen: number, globalBatch: number, seed: number, vocab: number): BatchSource {
  const where = `${configFile}: train_loader`;
  checkKeys(loader, ['name', 'dataset', 'drop_last', 'num_workers', 'prefetch_factor', 'pin_memory', 'persistent_workers', 'timeout'], where);
  const dataset = obj(loader.dataset, `${where}.dataset`);
  const base = dirname(resolve(configFile));
  const path = (p: unknown, key: string) => {
    if (typeof p !== 'string' || p === '') throw new ConfigError(`${where}.dataset.${key}: expected a path, got ${JSON.stringify(p)}`);
    return isAbsolute(p) ? p : resolve(base, p);
  };
  const checkSeqLen = (v: unknown) => {
    if (v !== undefined && v !== seqLen) throw new ConfigError(`${where}.dataset.max_seq_len: ${JSON.stringify(v)} differs from the model's max_seq_len ${seqLen}`);
  };
  if (loader.name === 'text') {
    checkKeys(dataset, ['local', 'remote', 'split', 'shuffle', 'max_seq_len', 'shuffle_seed', 'preset', 'weights', 'eos_token_id'], `${where}.dataset`);
    checkSeqLen(dataset.max_seq_len);
    if (dataset.split !== undefined && dataset.split !== 'train') throw new ConfigError(`${where}.dataset.split: the training split is "train", got ${JSON.stringify(dataset.split)}`);
    const mixture = openMixture({
      dataset: path(dataset.local, 'local'), seed: typeof dataset.shuffle_seed === 'number' ? dataset.shuffle_seed : seed, globalBatch,
      ...(dataset.weights !== undefined ? { weights: obj(dataset.weights, `${where}.dataset.weights`) as Record<string, number> } : {}),
      ...(typeof dataset.preset === 'string' ? { preset: dataset.preset } : {}),
    });
    return mixtureSource(mixture);
  }
  if (loader.name === 'bytes') {
    checkKeys(dataset, ['paths', 'val_fraction', 'max_seq_len', 'max_bytes'], `${where}.dataset`);
    checkSeqLen(dataset.max_seq_len);
    if (vocab < 256) throw new ConfigError(`${where}: byte tokens need vocab_size ≥ 256, the model has ${vocab}`);
    const paths = Array.isArray(dataset.paths) ? dataset.paths : [dataset.paths];
    return byteTextSource({
      paths: paths.map((p, i) => path(p, `paths[${i}]`)), seqLen, globalBatch, seed,
      valFraction: typeof dataset.val_fraction === 'number' ? dataset.val_fraction : 0.1,
      ...(typeof dataset.max_bytes === 'number' ? { maxBytes: dataset.max_bytes } : {}),
    });
  }
  throw new ConfigError(`${where}.name: ${JSON.stringify(loader.name)} is not a loader mpt-ts has (text: a prepared dataset; bytes: raw text files)`);
}
