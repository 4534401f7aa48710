import { parameterShapes, type MptConfig } from '../model/config.js';
import { ConfigError } from '../util/errors.js';
import { Rng } from '../util/random.js';

/**
 * Initial weights for training from scratch, as MosaicGPT's param_init_fns (mosaicml/examples v0.0.4,
 * llm-foundry later) with a seeded generator of our own (util/random: the same seed gives the same
 * weights on every machine, though not PyTorch's numbers):
 * - `kaiming_normal_`: linear weights and embeddings ~ N(0, gain²/fan) with fan = in-features
 *   (fan_mode fan_in) or out-features (fan_out), gain from init_nonlinearity (relu: √2;
 *   leaky_relu: √(2/(1+init_gain²)); linear: 1);
 * - `baseline_`: N(0, init_std²) for the same tensors;
 * - then, with init_div_is_residual, the residual projections (attn.out_proj, mlp_down) ÷ √(2·n_layers);
 * - emb_init_std, when given, overrides the embeddings' init; LayerNorm weights 1; every bias 0.
 * The fused Wqkv is initialised as three [d, d] blocks: with fan_in all three share one std anyway.
 */
export interface InitSettings {
  paramInitFn: 'kaiming_normal_' | 'baseline_';
  initStd: number;
  embInitStd: number | null;
  initGain: number;
  fanMode: 'fan_in' | 'fan_out';
  nonlinearity: 'relu' | 'leaky_relu' | 'linear';
  initDivIsResidual: boolean | number;
}

export const DEFAULT_INIT: InitSettings = {
  paramInitFn: 'kaiming_normal_', initStd: 0.02, embInitStd: null, initGain: 0, fanMode: 'fan_in', nonlinearity: 'relu', initDivIsResidual: true,
};

/** `progress(values)`: called after each tensor with the values it filled (a 1.3B init takes a while). */
export function initialWeights(config: MptConfig, s: InitSettings, seed: number, progress?: (values: number) => void): Map<string, Float32Array> {
  const rng = new Rng(seed);
  const weights = new Map<string, Float32Array>();
  const divisor = s.initDivIsResidual === true ? Math.sqrt(2 * config.nLayers) : s.initDivIsResidual === false ? 1 : s.initDivIsResidual;
  for (const [name, shape] of parameterShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    weights.set(name, data);
    if (shape.length === 1) data.fill(name.endsWith('.bias') ? 0 : 1); // LayerNorm weights 1, biases 0
    else {
      const isEmbedding = name === 'wte.weight' || name === 'wpe.weight';
      const std = isEmbedding && s.embInitStd !== null ? s.embInitStd : standardDeviation(s, shape);
      rng.fillNormal(data, /\.(attn\.out|mlp\.down)\.weight$/.test(name) ? std / divisor : std);
    }
    progress?.(n);
  }
  return weights;
}

function standardDeviation(s: InitSettings, shape: number[]): number {
  if (s.paramInitFn === 'baseline_') return s.initStd;
  const fan = s.fanMode === 'fan_in' ? shape[1] : shape[0];
  const gain = s.nonlinearity === 'relu' ? Math.SQRT2 : s.nonlinearity === 'leaky_relu' ? Math.sqrt(2 / (1 + s.initGain ** 2)) : 1;
  return gain / Math.sqrt(fan);
}

export function checkInitFn(name: unknown, where: string): InitSettings['paramInitFn'] {
  if (name === 'kaiming_normal_' || name === 'baseline_') return name;
  throw new ConfigError(`${where}: param_init_fn ${JSON.stringify(name)} is not supported (kaiming_normal_ or baseline_)`);
}
