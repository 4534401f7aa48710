import type { Tensor } from '../backend/backend.js';
import type { MptConfig } from './config.js';
import type { Affine, MptParams } from './params.js';

/** The inverse of structureParams: every parameter tensor by its canonical name (parameterShapes order). */
export function paramsByName(config: MptConfig, p: MptParams): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  const affine = (name: string, a: Affine | null) => {
    if (!a) return;
    out.set(`${name}.weight`, a.weight);
    if (a.bias) out.set(`${name}.bias`, a.bias);
  };
  out.set('wte.weight', p.wte);
  if (p.wpe) out.set('wpe.weight', p.wpe);
  p.blocks.forEach((b, i) => {
    const n = `blocks.${i}`;
    affine(`${n}.ln1`, b.ln1);
    affine(`${n}.attn.wqkv`, b.wqkv);
    affine(`${n}.attn.qLn`, b.qLn);
    affine(`${n}.attn.kLn`, b.kLn);
    affine(`${n}.attn.out`, b.out);
    affine(`${n}.ln2`, b.ln2);
    affine(`${n}.mlp.up`, b.up);
    affine(`${n}.mlp.down`, b.down);
  });
  affine('lnF', p.lnF);
  if (p.lmHead) out.set('lmHead.weight', p.lmHead);
  if (config.nLayers !== p.blocks.length) throw new Error(`paramsByName: ${p.blocks.length} blocks for a config of ${config.nLayers}`);
  return out;
}
