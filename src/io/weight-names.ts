import type { ConfigFormat } from './hf-config.js';

/**
 * Tensor names of both on-disk formats ↔ the canonical names of `parameterShapes()`. Only src/io knows
 * the on-disk names; everything else sees `blocks.N.attn.wqkv.weight` and friends.
 */

/** Per-block module names: canonical → [MosaicGPT, MPT]. */
const BLOCK_MODULES: Array<[string, string, string]> = [
  ['ln1', 'ln_1', 'norm_1'],
  ['attn.wqkv', 'attn.Wqkv', 'attn.Wqkv'],
  ['attn.qLn', 'attn.q_ln', 'attn.q_ln'],
  ['attn.kLn', 'attn.k_ln', 'attn.k_ln'],
  ['attn.out', 'attn.out_proj', 'attn.out_proj'],
  ['ln2', 'ln_2', 'norm_2'],
  ['mlp.up', 'mlp.mlp_up', 'ffn.up_proj'],
  ['mlp.down', 'mlp.mlp_down', 'ffn.down_proj'],
];

/** Model-level module names: canonical → [MosaicGPT, MPT]. */
const TOP_MODULES: Array<[string, string, string]> = [
  ['wte', 'transformer.wte', 'transformer.wte'],
  ['wpe', 'transformer.wpe', 'transformer.wpe'],
  ['lnF', 'transformer.ln_f', 'transformer.norm_f'],
  ['lmHead', 'lm_head', 'lm_head'],
];

const column = (format: ConfigFormat) => (format === 'mosaic_gpt' ? 1 : 2);

/**
 * The canonical name of a tensor in a checkpoint of `format`; `null` for a tensor to drop (`lm_head.weight`
 * of a tied model, which is wte again); `undefined` for a name neither format has.
 */
export function canonicalName(format: ConfigFormat, sourceName: string, tiedEmbeddings: boolean): string | null | undefined {
  const col = column(format);
  const match = /^(.*)\.(weight|bias)$/.exec(sourceName);
  if (!match) return undefined;
  const [, module, kind] = match;
  if (module === 'lm_head' && tiedEmbeddings) return null;
  for (const row of TOP_MODULES) if (row[col] === module) return `${row[0]}.${kind}`;
  const block = /^transformer\.blocks\.(\d+)\.(.+)$/.exec(module);
  if (block) {
    for (const row of BLOCK_MODULES) if (row[col] === block[2]) return `blocks.${Number(block[1])}.${row[0]}.${kind}`;
  }
  return undefined;
}

/** The name a canonical tensor has in a checkpoint of `format` (MosaicGPT names are what `mpt export` writes). */
export function sourceName(format: ConfigFormat, canonical: string): string {
  const col = column(format);
  const match = /^(.*)\.(weight|bias)$/.exec(canonical);
  if (match) {
    const [, module, kind] = match;
    for (const row of TOP_MODULES) if (row[0] === module) return `${row[col]}.${kind}`;
    const block = /^blocks\.(\d+)\.(.+)$/.exec(module);
    if (block) {
      for (const row of BLOCK_MODULES) if (row[0] === block[2]) return `transformer.blocks.${block[1]}.${row[col]}.${kind}`;
    }
  }
  throw new Error(`no on-disk name for canonical parameter ${canonical}`);
}

export const mosaicGptName = (canonical: string): string => sourceName('mosaic_gpt', canonical);
