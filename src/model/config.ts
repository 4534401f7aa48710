/**
 * The one normalized configuration of an MPT-family model. Both on-disk formats (MosaicGPT and MPT)
 * are translated into this by src/io/hf-config.ts; nothing outside src/io knows their key names.
 */
export interface MptConfig {
  dModel: number;
  nHeads: number;
  nLayers: number;
  /** MLP hidden width = expansionRatio · dModel (MosaicGPT `mlp_ratio`, MPT `expansion_ratio`). */
  expansionRatio: number;
  maxSeqLen: number;
  vocabSize: number;
  alibi: boolean;
  alibiBiasMax: number;
  /**
   * How ALiBi slopes are laid out across heads. `plain`: 2^(-max·(h+1)/n) for any n (MosaicGPT).
   * `power-of-two`: llm-foundry's gen_slopes, computed for the next power of two and interleaved.
   */
  alibiSlopes: 'plain' | 'power-of-two';
  /** Learned absolute position embeddings (`wpe`); never together with ALiBi. */
  learnedPosEmb: boolean;
  qkLn: boolean;
  clipQkv: number | null;
  softmaxScale: number | null;
  noBias: boolean;
  /** Multiply the logits by this (MPT `logit_scale`, with `inv_sqrt_d_model` resolved to 1/sqrt(d)). */
  logitScale: number | null;
  layerNormEps: number;
  /** The output projection is the token embedding transposed (always true for the formats we run). */
  tieWordEmbeddings: boolean;
  /** Training only: the share of the embedding's gradient that flows (MosaicGPT `embedding_fraction`). */
  embeddingFraction: number;
}

export const dHead = (c: MptConfig): number => c.dModel / c.nHeads;
export const mlpHidden = (c: MptConfig): number => Math.round(c.expansionRatio * c.dModel);
export const softmaxScale = (c: MptConfig): number => c.softmaxScale ?? 1 / Math.sqrt(dHead(c));

/** ALiBi slope of each head: the bias of query i on key j is -(i-j)·slope. */
export function alibiSlopes(c: MptConfig): Float32Array {
  const n = c.nHeads;
  if (c.alibiSlopes === 'plain') {
    return Float32Array.from({ length: n }, (_, h) => 2 ** (-(c.alibiBiasMax * (h + 1)) / n));
  }
  const padded = 2 ** Math.ceil(Math.log2(n));
  const slopes = Array.from({ length: padded }, (_, h) => 2 ** (-(c.alibiBiasMax * (h + 1)) / padded));
  if (padded === n) return Float32Array.from(slopes);
  const odd = slopes.filter((_, i) => i % 2 === 1), even = slopes.filter((_, i) => i % 2 === 0);
  return Float32Array.from([...odd, ...even].slice(0, n));
}

/**
 * Every parameter by its canonical name, with its shape. Weights are [out, in] as in PyTorch, so a
 * linear layer computes x · Wᵀ. Biases and LayerNorm biases exist only without `noBias`.
 */
export function parameterShapes(c: MptConfig): Map<string, number[]> {
  const d = c.dModel, h = mlpHidden(c);
  const shapes = new Map<string, number[]>();
  const withBias = (name: string, weight: number[]) => {
    shapes.set(`${name}.weight`, weight);
    if (!c.noBias) shapes.set(`${name}.bias`, [weight[0]]);
  };
  const linear = (name: string, out: number, inp: number) => withBias(name, [out, inp]);
  const norm = (name: string, width: number) => withBias(name, [width]);
  shapes.set('wte.weight', [c.vocabSize, d]);
  if (c.learnedPosEmb && !c.alibi) shapes.set('wpe.weight', [c.maxSeqLen, d]);
  for (let i = 0; i < c.nLayers; i++) {
    const b = `blocks.${i}`;
    norm(`${b}.ln1`, d);
    linear(`${b}.attn.wqkv`, 3 * d, d);
    if (c.qkLn) {
      norm(`${b}.attn.qLn`, d);
      norm(`${b}.attn.kLn`, d);
    }
    linear(`${b}.attn.out`, d, d);
    norm(`${b}.ln2`, d);
    linear(`${b}.mlp.up`, h, d);
    linear(`${b}.mlp.down`, d, h);
  }
  norm('lnF', d);
  if (!c.tieWordEmbeddings) shapes.set('lmHead.weight', [c.vocabSize, d]);
  return shapes;
}

export const parameterCount = (c: MptConfig): number =>
  [...parameterShapes(c).values()].reduce((sum, s) => sum + s.reduce((a, b) => a * b, 1), 0);

/**
 * Training FLOPs of one sequence of t tokens as llm-foundry counts them for MFU (BASELINES.md):
 * forward and backward of every parameter, 6·N·t, plus attention's scores and mixing, 12·L·d·t².
 */
export const trainingFlopsPerSequence = (c: MptConfig, t: number): number =>
  3 * (2 * parameterCount(c) * t + c.nLayers * 4 * c.dModel * t * t);

/** The seed model, mosaicml/mpt-1b-redpajama-200b, exactly. */
export const MPT_1B_REDPAJAMA_200B: MptConfig = {
  dModel: 2048, nHeads: 16, nLayers: 24, expansionRatio: 4, maxSeqLen: 2048, vocabSize: 50432,
  alibi: true, alibiBiasMax: 8, alibiSlopes: 'plain', learnedPosEmb: false, qkLn: true, clipQkv: null,
  softmaxScale: null, noBias: true, logitScale: null, layerNormEps: 1e-5, tieWordEmbeddings: true,
  embeddingFraction: 1,
};
