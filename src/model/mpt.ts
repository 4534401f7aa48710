import type { Backend, Tensor } from '../backend/backend.js';
import { alibiSlopes, softmaxScale, type MptConfig } from './config.js';
import { KVCache } from './kv-cache.js';
import type { Affine, BlockParams, MptParams } from './params.js';

export interface ForwardOptions {
  /** Which positions get logits: every one ('all') or only each row's last ('last', for generation). */
  logits?: 'all' | 'last';
  /** [batch, t] 1 = real token, 0 = left padding; omitted: every token is real. */
  attentionMask?: ArrayLike<number> | null;
}

/**
 * The MPT decoder, written once against the Backend (DESIGN.md, "The model, exactly"):
 *   x = wte[ids] (+ wpe[pos])
 *   per block:  x += out(attention(q_LN(q), k_LN(k), v) with ALiBi);  x += down(gelu(up(LN_2(x))))
 *   logits = LN_f(x) · wteᵀ (· logit_scale)
 */
export class MptModel {
  private readonly slopes: Float32Array | null;
  private readonly scale: number;

  constructor(readonly config: MptConfig, readonly backend: Backend, readonly params: MptParams) {
    this.slopes = config.alibi ? alibiSlopes(config) : null;
    this.scale = softmaxScale(config);
  }

  newCache(batch: number, capacity: number): KVCache {
    return new KVCache(this.backend, this.config, batch, capacity);
  }

  /**
   * Run `ids` ([batch, t], row-major) after what `cache` already holds and append their keys and
   * values to it. Returns logits [batch, t, vocab], or [batch, 1, vocab] with `logits: 'last'`.
   */
  forward(ids: Int32Array, cache: KVCache, options: ForwardOptions = {}): Tensor {
    const { backend: be, config: c, params: p } = this;
    const batch = cache.batch, t = ids.length / batch;
    if (!Number.isInteger(t) || t < 1) throw new Error(`forward: ${ids.length} ids do not make ${batch} rows`);
    if (cache.length + t > cache.capacity) {
      throw new Error(`forward: ${cache.length} cached + ${t} new positions exceed the cache's ${cache.capacity}`);
    }
    cache.appendMask(t, options.attentionMask ?? null);
    const logits = be.scope(() => {
      let x = be.embedding(be.upload(ids, [batch * t], 'int32'), p.wte);
      if (p.wpe) x = be.add(x, be.embedding(be.upload(cache.positions(t), [batch * t], 'int32'), p.wpe));
      const keyMask = cache.keyMask(cache.length + t);
      p.blocks.forEach((block, layer) => {
        // A scope a block: its activations are dead once the residual stream has moved on.
        x = be.scope(() => {
          const mid = be.add(x, this.attention(block, layer, x, cache, batch, t, keyMask));
          return be.add(mid, this.mlp(block, mid));
        });
      });
      if (options.logits === 'last') x = be.rows(x, Array.from({ length: batch }, (_, b) => b * t + t - 1));
      x = this.norm(x, p.lnF);
      let out = be.linear(x, p.lmHead ?? p.wte, null);
      if (c.logitScale !== null) out = be.scale(out, c.logitScale);
      return be.view(out, [batch, options.logits === 'last' ? 1 : t, c.vocabSize]);
    });
    cache.length += t;
    return logits;
  }

  private attention(block: BlockParams, layer: number, x: Tensor, cache: KVCache, batch: number, t: number, keyMask: Tensor | null): Tensor {
    const { backend: be, config: c } = this;
    const d = c.dModel;
    let qkv = this.affine(this.norm(x, block.ln1), block.wqkv);
    if (c.clipQkv !== null) qkv = be.clamp(qkv, c.clipQkv);
    let q = be.columns(qkv, 0, d);
    let k = be.columns(qkv, d, d);
    const v = be.columns(qkv, 2 * d, d);
    if (block.qLn && block.kLn) {
      q = this.norm(q, block.qLn);
      k = this.norm(k, block.kLn);
    }
    be.writeRows(cache.k[layer], be.view(k, [batch, t, d]), cache.length);
    be.writeRows(cache.v[layer], be.view(v, [batch, t, d]), cache.length);
    const attended = be.attention({
      q: be.view(q, [batch, t, d]), k: cache.k[layer], v: cache.v[layer], kvLen: cache.length + t,
      nHeads: c.nHeads, scale: this.scale, alibiSlopes: this.slopes, keyMask,
    });
    return this.affine(be.view(attended, [batch * t, d]), block.out);
  }

  private mlp(block: BlockParams, x: Tensor): Tensor {
    return this.affine(this.backend.gelu(this.affine(this.norm(x, block.ln2), block.up)), block.down);
  }

  private norm(x: Tensor, n: Affine): Tensor {
    return this.backend.layerNorm(x, n.weight, n.bias, this.config.layerNormEps);
  }

  private affine(x: Tensor, l: Affine): Tensor {
    return this.backend.linear(x, l.weight, l.bias);
  }
}
