import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { HubOptions } from '../io/hub.js';
import { tokenizerFile } from '../io/tokenizer-location.js';
import { writeSafetensors } from '../io/safetensors.js';
import { sourceName } from '../io/weight-names.js';
import { parameterShapes, type MptConfig } from '../model/config.js';
import { writeFileAtomic } from '../util/atomic.js';
import { float32ToBfloat16Array } from '../util/dtype.js';
import { UserError } from '../util/errors.js';
import { CheckpointReader, resolveCheckpoint } from './checkpoint.js';

/**
 * A training checkpoint → a Hugging Face model folder: config.json in the MosaicGPT format (as the
 * seed model's own), model.safetensors (float32, MosaicGPT tensor names) and the tokenizer files of
 * the run's tokenizer: copied from its folder, or for a hub name (the seed YAML's
 * EleutherAI/gpt-neox-20b) from the hub cache, fetched there when missing, so that the folder loads
 * without the network. A model MosaicGPT's config cannot describe (llm-foundry's interleaved ALiBi
 * slopes for a head count that is not a power of two, an untied output) is written in the MPT format
 * instead.
 */
const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];

export interface ExportOptions {
  /** The weights' dtype on disk: float32 (the master weights as trained) or bfloat16 (half the size). */
  dtype?: 'float32' | 'bfloat16';
  /** config.json's `tokenizer_name` (a hub name such as EleutherAI/gpt-neox-20b); default: the run's tokenizer. */
  tokenizerName?: string;
  /** Where a hub-named tokenizer is looked up and fetched (tests: a cache folder, an endpoint, downloads off). */
  hub?: HubOptions;
}

export async function exportCheckpoint(checkpoint: string, outDir: string, options: ExportOptions = {}): Promise<{ dir: string; format: 'mosaic_gpt' | 'mpt'; notes: string[] }> {
  // The weights are read a tensor at a time as the writer reaches them (the moments are not read at all).
  const reader = await CheckpointReader.open(resolveCheckpoint(checkpoint));
  try {
    return await exportFrom(reader, outDir, options);
  } finally {
    await reader.close();
  }
}

async function exportFrom(reader: CheckpointReader, outDir: string, options: ExportOptions): Promise<{ dir: string; format: 'mosaic_gpt' | 'mpt'; notes: string[] }> {
  const dtype = options.dtype ?? 'float32';
  const { dir, state } = reader;
  const config = state.run.config as MptConfig | undefined;
  if (!config) throw new UserError(`${dir}: the checkpoint records no model config`);
  const nonPowerOfTwo = (config.nHeads & (config.nHeads - 1)) !== 0;
  const format = (config.alibi && config.alibiSlopes === 'power-of-two' && nonPowerOfTwo) || !config.tieWordEmbeddings ? 'mpt' : 'mosaic_gpt';
  mkdirSync(outDir, { recursive: true });
  const tokenizer = typeof state.run.tokenizer === 'string' ? state.run.tokenizer : null;
  const tokenizerName = options.tokenizerName ?? tokenizer;
  const json = format === 'mosaic_gpt' ? mosaicGptJson(config, tokenizerName) : mptJson(config, tokenizerName);
  await writeFileAtomic(join(outDir, 'config.json'), JSON.stringify({ ...json, torch_dtype: dtype }, null, 2) + '\n');
  await writeSafetensors(join(outDir, 'model.safetensors'), [...parameterShapes(config)].map(([name, shape]) => ({
    name: sourceName(format, name), dtype, shape,
    data: async () => {
      const values = await reader.read('params', name);
      const stored = dtype === 'bfloat16' ? float32ToBfloat16Array(values) : values;
      return new Uint8Array(stored.buffer, stored.byteOffset, stored.byteLength);
    },
  })), { format: 'pt', 'mpt-ts': `exported from ${basename(dir)} (step ${state.step})` });
  const notes: string[] = [];
  const from = await tokenizerFolder(tokenizer, options.hub ?? {}, notes);
  if (from) for (const f of TOKENIZER_FILES) if (existsSync(join(from, f))) copyFileSync(join(from, f), join(outDir, f));
  return { dir: outDir, format, notes };
}

/**
 * The folder holding the run's tokenizer files (io/tokenizer-location.ts: a path, or a hub name through the
 * hub cache). Null, with a note saying why, where there is none: the export still completes, and
 * config.json's tokenizer_name lets a loader fetch it later.
 */
async function tokenizerFolder(tokenizer: string | null, hub: HubOptions, notes: string[]): Promise<string | null> {
  if (!tokenizer) {
    notes.push('the run named no tokenizer (byte-level tokens): no tokenizer files written');
    return null;
  }
  try {
    return dirname(await tokenizerFile(tokenizer, { quiet: true, ...hub }));
  } catch (e) {
    notes.push(`the tokenizer's files were not copied: ${e instanceof Error ? e.message : String(e)}; config.json's tokenizer_name lets a loader fetch them when the hub is reachable`);
    return null;
  }
}

function mosaicGptJson(c: MptConfig, tokenizer: string | null): Record<string, unknown> {
  return {
    architectures: ['MosaicGPT'], model_type: 'mosaic_gpt',
    d_model: c.dModel, n_heads: c.nHeads, n_layers: c.nLayers, mlp_ratio: c.expansionRatio, max_seq_len: c.maxSeqLen, vocab_size: c.vocabSize,
    alibi: c.alibi, alibi_bias_max: c.alibiBiasMax, attn_qk_ln: c.qkLn, attn_clip_qkv: c.clipQkv, softmax_scale: c.softmaxScale,
    no_bias: c.noBias, logit_scale: c.logitScale, layer_norm_epsilon: c.layerNormEps, embedding_fraction: c.embeddingFraction,
    attn_impl: 'torch', low_precision_layernorm: true, prefix_lm: false, attn_uses_sequence_id: false, use_cache: false,
    ...(tokenizer ? { tokenizer_name: tokenizer } : {}), torch_dtype: 'float32',
  };
}

function mptJson(c: MptConfig, tokenizer: string | null): Record<string, unknown> {
  return {
    architectures: ['MPTForCausalLM'], model_type: 'mpt',
    d_model: c.dModel, n_heads: c.nHeads, n_layers: c.nLayers, expansion_ratio: c.expansionRatio, max_seq_len: c.maxSeqLen, vocab_size: c.vocabSize,
    attn_config: { alibi: c.alibi, alibi_bias_max: c.alibiBiasMax, qk_ln: c.qkLn, clip_qkv: c.clipQkv, softmax_scale: c.softmaxScale, attn_type: 'multihead_attention' },
    learned_pos_emb: c.learnedPosEmb, no_bias: c.noBias, logit_scale: c.logitScale, layer_norm_epsilon: c.layerNormEps,
    embedding_fraction: c.embeddingFraction, norm_type: 'low_precision_layernorm', tie_word_embeddings: c.tieWordEmbeddings,
    ...(tokenizer ? { tokenizer_name: tokenizer } : {}), torch_dtype: 'float32',
  };
}
