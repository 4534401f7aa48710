import { promises as fs } from 'node:fs';
import type { MptConfig } from '../model/config.js';
import { ConfigError, FormatError, UserError } from '../util/errors.js';

/**
 * `config.json` of either on-disk format → the normalized MptConfig. Defaults are those of the original
 * code (mosaicml/examples v0.0.4 `MosaicGPTConfig`; llm-foundry / transformers `MPTConfig`), so a file
 * that leaves a key out means what it meant there. Options we cannot run are refused by name.
 */
export type ConfigFormat = 'mosaic_gpt' | 'mpt';

export interface ParsedConfig {
  format: ConfigFormat;
  config: MptConfig;
  raw: Record<string, unknown>;
}

export async function readHfConfig(file: string): Promise<ParsedConfig> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new UserError(`${file}: no such file`, { cause: error });
    throw error;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new FormatError(file, `malformed JSON (${(error as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new FormatError(file, 'is not a JSON object');
  return parseHfConfig(raw as Record<string, unknown>, file);
}

export function parseHfConfig(raw: Record<string, unknown>, file = 'config.json'): ParsedConfig {
  const modelType = raw.model_type;
  if (modelType === 'mosaic_gpt') return { format: 'mosaic_gpt', config: mosaicGptConfig(new Fields(raw, file)), raw };
  if (modelType === 'mpt') return { format: 'mpt', config: mptConfig(new Fields(raw, file)), raw };
  if (modelType === undefined) throw new ConfigError(`${file}: no model_type (expected "mosaic_gpt" or "mpt")`);
  throw new ConfigError(`${file}: model_type ${JSON.stringify(modelType)} is not supported (expected "mosaic_gpt" or "mpt")`);
}

function mosaicGptConfig(f: Fields): MptConfig {
  const shape = requiredShape(f);
  f.refuseIf('prefix_lm', f.bool('prefix_lm', false), 'prefix language modeling is not supported');
  f.refuseIf('attn_uses_sequence_id', f.bool('attn_uses_sequence_id', false), 'sequence-id attention masking is not supported');
  const alibi = f.bool('alibi', false);
  return {
    ...shape,
    expansionRatio: f.positive('mlp_ratio', 4),
    alibi,
    alibiBiasMax: f.positive('alibi_bias_max', 8),
    alibiSlopes: 'plain',
    // MosaicGPT has no learned_pos_emb key: it builds `wpe` exactly when ALiBi is off.
    learnedPosEmb: !alibi && f.bool('learned_pos_emb', true),
    qkLn: f.bool('attn_qk_ln', false),
    clipQkv: f.optionalPositive('attn_clip_qkv'),
    softmaxScale: f.optionalPositive('softmax_scale'),
    noBias: f.bool('no_bias', false),
    logitScale: logitScale(f, 'logit_scale', shape.dModel),
    layerNormEps: f.positive('layer_norm_epsilon', 1e-5),
    tieWordEmbeddings: true, // MosaicGPT always reads its logits through wte
    embeddingFraction: f.positive('embedding_fraction', 1),
  };
}

function mptConfig(f: Fields): MptConfig {
  const shape = requiredShape(f);
  const attn = f.object('attn_config');
  const attnType = attn.string('attn_type', 'multihead_attention');
  if (attnType !== 'multihead_attention') {
    attn.refuse('attn_type', attnType, 'only multihead_attention is supported (multi-query and grouped-query attention are not)');
  }
  // llm-foundry reads kv_n_heads only for grouped-query attention (refused above), and its defaults write
  // kv_n_heads: 1 into every config; a value that matters can only come with another attn_type.
  attn.refuseIf('prefix_lm', attn.bool('prefix_lm', false), 'prefix language modeling is not supported');
  attn.refuseIf('attn_uses_sequence_id', attn.bool('attn_uses_sequence_id', false), 'sequence-id attention masking is not supported');
  attn.refuseIf('rope', attn.bool('rope', false), 'rotary position embeddings (RoPE) are not supported');
  attn.refuseIf('qk_gn', attn.bool('qk_gn', false), 'QK group norm is not supported');
  attn.refuseIf('fused_qkv', !attn.bool('fused_qkv', true), 'separate Q, K, V projections are not supported');
  const window = attn.optionalNumber('sliding_window_size');
  if (window !== null && window !== -1) attn.refuse('sliding_window_size', window, 'sliding-window attention is not supported');

  const normType = f.string('norm_type', 'low_precision_layernorm');
  if (normType !== 'low_precision_layernorm' && normType !== 'layernorm') {
    f.refuse('norm_type', normType, 'only layernorm and low_precision_layernorm are supported');
  }
  const fcType = f.raw.fc_type;
  if (fcType !== undefined && fcType !== 'torch' && !(isObject(fcType) && fcType.name === 'torch')) {
    f.refuse('fc_type', fcType, 'only torch linear layers are supported');
  }
  const ffn = f.object('ffn_config');
  const ffnType = ffn.string('ffn_type', 'mptmlp');
  if (ffnType !== 'mptmlp') ffn.refuse('ffn_type', ffnType, 'only the plain GELU MLP (mptmlp) is supported');
  const act = ffn.raw.ffn_act_fn;
  if (act !== undefined && act !== null && !(isObject(act) && act.name === 'gelu' && (act.approximate ?? 'none') === 'none')) {
    ffn.refuse('ffn_act_fn', act, 'only exact (erf) GELU is supported');
  }
  const blockOverrides = f.raw.block_overrides;
  if (blockOverrides !== undefined && blockOverrides !== null && !(isObject(blockOverrides) && Object.keys(blockOverrides).length === 0)) {
    f.refuse('block_overrides', blockOverrides, 'per-layer block overrides are not supported');
  }
  const hidden = ffn.optionalPositive('ffn_hidden_size');
  const expansionRatio = hidden !== null ? hidden / shape.dModel : f.positive('expansion_ratio', 4);

  const alibi = attn.bool('alibi', false);
  return {
    ...shape,
    expansionRatio,
    alibi,
    alibiBiasMax: attn.positive('alibi_bias_max', 8),
    alibiSlopes: 'power-of-two',
    learnedPosEmb: !alibi && f.bool('learned_pos_emb', true), // llm-foundry switches wpe off under ALiBi
    qkLn: attn.bool('qk_ln', false),
    clipQkv: attn.optionalPositive('clip_qkv'),
    softmaxScale: attn.optionalPositive('softmax_scale'),
    noBias: f.bool('no_bias', false),
    logitScale: logitScale(f, 'logit_scale', shape.dModel),
    layerNormEps: f.positive('layer_norm_epsilon', 1e-5),
    tieWordEmbeddings: f.bool('tie_word_embeddings', true),
    embeddingFraction: f.positive('embedding_fraction', 1),
  };
}

function requiredShape(f: Fields) {
  const dModel = f.requiredInt('d_model');
  const nHeads = f.requiredInt('n_heads');
  if (dModel % nHeads !== 0) throw new ConfigError(`${f.file}: d_model ${dModel} is not divisible by n_heads ${nHeads}`);
  return { dModel, nHeads, nLayers: f.requiredInt('n_layers'), maxSeqLen: f.requiredInt('max_seq_len'), vocabSize: f.requiredInt('vocab_size') };
}

function logitScale(f: Fields, key: string, dModel: number): number | null {
  const value = f.raw[key];
  if (value === undefined || value === null) return null;
  if (value === 'inv_sqrt_d_model') return 1 / Math.sqrt(dModel);
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  return f.refuse(key, value, 'expected a number or "inv_sqrt_d_model"');
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Typed access to one JSON object's keys; errors name the file and the key path. */
class Fields {
  constructor(readonly raw: Record<string, unknown>, readonly file: string, private readonly prefix = '') {}

  private name(key: string): string { return `${this.prefix}${key}`; }

  refuse(key: string, value: unknown, problem: string): never {
    throw new ConfigError(`${this.file}: ${this.name(key)} = ${JSON.stringify(value)}: ${problem}`);
  }

  refuseIf(key: string, condition: boolean, problem: string): void {
    if (condition) this.refuse(key, this.raw[key], problem);
  }

  object(key: string): Fields {
    const value = this.raw[key];
    if (value === undefined || value === null) return new Fields({}, this.file, `${this.name(key)}.`);
    if (!isObject(value)) return this.refuse(key, value, 'expected an object');
    return new Fields(value, this.file, `${this.name(key)}.`);
  }

  requiredInt(key: string): number {
    const value = this.raw[key];
    if (value === undefined || value === null) throw new ConfigError(`${this.file}: required field ${this.name(key)} is missing`);
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) return this.refuse(key, value, 'expected a positive integer');
    return value;
  }

  bool(key: string, fallback: boolean): boolean {
    const value = this.raw[key];
    if (value === undefined || value === null) return fallback;
    if (typeof value !== 'boolean') return this.refuse(key, value, 'expected true or false');
    return value;
  }

  string(key: string, fallback: string): string {
    const value = this.raw[key];
    if (value === undefined || value === null) return fallback;
    if (typeof value !== 'string') return this.refuse(key, value, 'expected a string');
    return value;
  }

  positive(key: string, fallback: number): number {
    return this.optionalPositive(key) ?? fallback;
  }

  optionalNumber(key: string): number | null {
    const value = this.raw[key];
    if (value === undefined || value === null) return null;
    if (typeof value !== 'number' || !Number.isFinite(value)) return this.refuse(key, value, 'expected a number');
    return value;
  }

  optionalPositive(key: string): number | null {
    const value = this.optionalNumber(key);
    if (value !== null && value <= 0) return this.refuse(key, value, 'expected a positive number');
    return value;
  }
}
