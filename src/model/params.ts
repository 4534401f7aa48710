import type { Tensor } from '../backend/backend.js';
import type { MptConfig } from './config.js';

/** A layer's weight (and bias, absent with no_bias). LayerNorms and linear layers share the shape. */
export interface Affine {
  weight: Tensor;
  bias: Tensor | null;
}

export interface BlockParams {
  ln1: Affine;
  wqkv: Affine;
  qLn: Affine | null;
  kLn: Affine | null;
  out: Affine;
  ln2: Affine;
  up: Affine;
  down: Affine;
}

export interface MptParams {
  wte: Tensor;
  wpe: Tensor | null;
  blocks: BlockParams[];
  lnF: Affine;
  /** Only for untied output layers; the formats we run tie the output to `wte`. */
  lmHead: Tensor | null;
}

/** Arrange tensors keyed by canonical name (see parameterShapes) into the model's structure. */
export function structureParams(config: MptConfig, byName: Map<string, Tensor>): MptParams {
  const get = (name: string): Tensor => {
    const t = byName.get(name);
    if (!t) throw new Error(`parameter ${name} is missing`);
    return t;
  };
  const affine = (name: string): Affine => ({ weight: get(`${name}.weight`), bias: byName.get(`${name}.bias`) ?? null });
  return {
    wte: get('wte.weight'),
    wpe: byName.get('wpe.weight') ?? null,
    blocks: Array.from({ length: config.nLayers }, (_, i) => {
      const b = `blocks.${i}`;
      return {
        ln1: affine(`${b}.ln1`),
        wqkv: affine(`${b}.attn.wqkv`),
        qLn: config.qkLn ? affine(`${b}.attn.qLn`) : null,
        kLn: config.qkLn ? affine(`${b}.attn.kLn`) : null,
        out: affine(`${b}.attn.out`),
        ln2: affine(`${b}.ln2`),
        up: affine(`${b}.mlp.up`),
        down: affine(`${b}.mlp.down`),
      };
    }),
    lnF: affine('lnF'),
    lmHead: byName.get('lmHead.weight') ?? null,
  };
}
