/**
 * Fast MPT inference on CUDA: the same math as src/model/mpt.ts, laid out for the GPU.
 * - every activation buffer is planned once for (batch, capacity), so no step allocates;
 * - fused kernels: QKV split + clamp + QK LayerNorm + KV-cache write in one pass; the residual adds
 *   happen inside the out-projection and MLP-down GEMMs (their epilogue, or cuBLASLt with beta = 1);
 * - in a decode step (few rows, skinny_gemm.cu) those two GEMMs also write the row statistics of the
 *   residual stream, so ln_2, the next layer's ln_1 and ln_f normalize without reductions over the row
 *   (layerNormMatmulInto: the next GEMM's prologue at one row, else a barrier-free kernel); the QKV GEMM
 *   clamps and writes the statistics of q and k, and the QKV split runs inside the decode attention
 *   kernel (decode_attention.cu); every kernel of the step is launched with programmatic dependent
 *   launch, so each GEMM's weight stream starts while the kernels before it run;
 * - prefill attention on the tensor cores (flash_attention.cu), decode attention split along the keys;
 * - only the last position of each row gets logits, and the next token is chosen on the GPU;
 * - a decode step reads its position from device memory and writes its token where the next step reads
 *   it, so after one eager step it is captured as a CUDA graph and replayed;
 * - step() keeps one step ahead (pipeline): the next step is enqueued before the host waits for this
 *   one's tokens (copied into pinned memory behind an event), so the GPU does not idle while the host
 *   wakes up, hands the tokens on and launches the next graph. Each step's logits go to one of two
 *   buffers in turn (one graph for each), so the step ahead never overwrites what lastLogits() reads.
 *
 * The weights are the model's own tensors (structurally the same as src/model/params.ts' MptParams).
 */
import type { MptConfig } from '../../model/config.js';
import { DecoderUnsupported, elementCount, type Tensor } from '../backend.js';
import { CU_EVENT_DISABLE_TIMING, CudaEvent, PinnedBuffer, type CudaGraph } from './driver.js';
import type { CudaBackend } from './index.js';
import { asCuda, bytesPer, type CudaTensor } from './tensor.js';

interface Affine { weight: Tensor; bias: Tensor | null }
export interface DecoderParams {
  wte: Tensor;
  wpe: Tensor | null;
  blocks: { ln1: Affine; wqkv: Affine; qLn: Affine | null; kLn: Affine | null; out: Affine; ln2: Affine; up: Affine; down: Affine }[];
  lnF: Affine;
  lmHead: Tensor | null;
}

/** How the next token is chosen; fixed for a decoder's run so that the decode step can be a graph. */
export interface GpuSampling {
  /** ≤ 0: greedy. */
  temperature: number;
  topK?: number;
  topP?: number;
  seed?: number;
}

export interface DecoderOptions {
  /** Capture the decode step as a CUDA graph (default true; models with learned positions never are). */
  graphs?: boolean;
  /**
   * step() enqueues the following step before it waits for this one's tokens (default: the backend's
   * pipelineDecode, on unless MPT_CUDA_PIPELINE=0). The step ahead is exactly the step the next call
   * would run (its input tokens are already on the device; sampling seeds depend on the position), so
   * results are the same; a run that stops early leaves one step of work unused.
   */
  pipeline?: boolean;
  /** Bytes of each layer's up weights the out-projection L2-prefetches in a decode step; default upPrefetchBytesFor(). */
  upPrefetchBytes?: number;
}

/**
 * Bytes of the up weights a decode step's out-projection L2-prefetches (skinny_gemm.cu
 * l2_prefetch_share): the backend's l2PrefetchUpBytes up to 8 rows, half of it from 9 rows (two row
 * tiles). Measured on the H100, 4 MB against 8 MB in the same process (bench/RESULTS-cuda.md): batch 1
 * 851 / 865 and 851 / 866 tokens/s (two calls), batch 16 11,630 / 11,579, 11,639 / 11,579 and 11,608 /
 * 11,573 (three calls).
 */
export function upPrefetchBytesFor(l2PrefetchUpBytes: number, rows: number): number {
  return rows > 8 ? Math.floor(l2PrefetchUpBytes / 2) : l2PrefetchUpBytes;
}

type Stage = (name: string) => void;

/** At most `n` bytes: a prefetch of the head of tensor `t`. */
const headBytes = (t: CudaTensor, n: number): number => Math.min(n, elementCount(t.shape) * bytesPer(t.dtype));

export class CudaDecoder {
  private readonly c: MptConfig;
  private readonly d: number;
  private readonly hidden: number;
  private readonly kCache: CudaTensor[];
  private readonly vCache: CudaTensor[];
  private readonly owned: CudaTensor[] = [];
  private readonly nextIds: CudaTensor;
  private readonly position: CudaTensor;   // int32 [1]: positions filled, read by the decode step
  private readonly mask: CudaTensor;       // int32 [batch, capacity]
  private readonly hostMask: Int32Array;
  private logits: CudaTensor;              // [batch, vocab]: the buffer the forward being enqueued writes
  private readonly logitsPair: [CudaTensor, CudaTensor]; // alternate steps write alternate buffers
  private logitsTurn = 0;                  // which of logitsPair the next forward writes
  private shownLogits: CudaTensor;         // the logits of the step whose tokens were returned last
  private readonly lastRows: CudaTensor;   // float32 [batch, d]: each row's last position of the residual stream
  private readonly finalH: CudaTensor;     // [batch, d]: LN_f of lastRows
  private readonly slopes: CudaTensor | null;
  private readonly step1: ReturnType<CudaDecoder['buffers']>;
  private padded = false;
  private sampling: GpuSampling = { temperature: 0 };
  private graphs: [CudaGraph | null, CudaGraph | null] = [null, null]; // one per logits buffer
  private readonly pipeline: boolean;
  /** One decode step is enqueued beyond the one whose tokens were returned last (step()'s pipeline). */
  private ahead = false;
  /** enqueueStep() ran since the tokens were last read: readIds() must fetch them. */
  private unread = false;
  private lastIds: Int32Array;
  /** [batch] token ids, then the backend's 2-int error flag, copied in after each step. */
  private readonly pinned: PinnedBuffer;
  private readonly pinnedIds: Int32Array;
  private readonly pinnedFlag: Int32Array;
  private readonly readback: CudaEvent;
  private eagerSteps = 0;
  private graphKey = '';
  length = 0;
  /** Called between stages when set (per-kernel timing in the benchmark). */
  onStage: Stage | null = null;

  constructor(private readonly be: CudaBackend, config: MptConfig, private readonly p: DecoderParams, slopes: Float32Array | null,
    readonly batch: number, readonly capacity: number, private readonly options: DecoderOptions = {}) {
    // Refuse what this path does not run before allocating anything: the caller falls back.
    if (p.wpe) throw new DecoderUnsupported('the fused CUDA decoder runs ALiBi models; models with learned positions use the generic path');
    if (be.activationDType === 'bfloat16' && [p.lnF.bias, ...p.blocks.flatMap((b) => [b.out.bias, b.down.bias])].some((x) => x)) {
      throw new DecoderUnsupported('the fused CUDA decoder does not run models with biases in bfloat16 yet: use the generic path');
    }
    this.c = config;
    this.d = config.dModel;
    this.hidden = asCuda(p.blocks[0].up.weight, 'decoder').shape[0];
    const own = (t: CudaTensor) => { this.owned.push(t); return t; };
    const kv = () => own(be.zeros([batch, capacity, this.d]) as CudaTensor);
    this.kCache = p.blocks.map(kv);
    this.vCache = p.blocks.map(kv);
    this.nextIds = own(be.zeros([batch], 'int32') as CudaTensor);
    this.position = own(be.zeros([1], 'int32') as CudaTensor);
    this.mask = own(be.zeros([batch, capacity], 'int32') as CudaTensor);
    this.hostMask = new Int32Array(batch * capacity).fill(1);
    // Logits and the residual stream are float32 whatever the compute dtype (as under torch autocast,
    // where the residual adds happen in float32): bf16 logits would be off by up to 1/64 at |logit| ≈ 4.
    this.logitsPair = [own(be.alloc([batch, config.vocabSize], 'float32')), own(be.alloc([batch, config.vocabSize], 'float32'))];
    this.logits = this.shownLogits = this.logitsPair[0];
    this.lastIds = new Int32Array(batch);
    this.lastRows = own(be.alloc([batch, this.d], 'float32'));
    this.finalH = own(be.alloc([batch, this.d]));
    this.slopes = slopes ? be.slopesOnDevice(slopes) : null;
    this.step1 = this.buffers(1);
    const blocks = batch * config.nHeads;
    this.decodeSplits = Math.max(1, Math.min(32, Math.ceil(2 * be.device.multiprocessors / blocks), Math.ceil(capacity / 256)));
    // The folded decode attention chooses its working splits each step from the context (perSplit keys
    // a split, decode_attention.cu), so the grid is sized for a full cache; without perSplit it spreads
    // the keys over about 32 a block up to 4 blocks an SM (merged in-kernel).
    const heads = config.nHeads, dHead = this.d / heads;
    this.foldPerSplit = be.foldPerSplitFor(blocks);
    this.foldSplits = this.foldPerSplit > 0 ? Math.max(1, Math.min(32, Math.ceil(capacity / this.foldPerSplit)))
      : Math.max(1, Math.min(32, Math.ceil(capacity / 32), Math.ceil(4 * be.device.multiprocessors / blocks)));
    this.foldPartial = this.foldSplits > 1 ? own(be.alloc([batch * heads * this.foldSplits * (2 + dHead)], 'float32')) : null;
    this.foldCounters = this.foldSplits > 1 ? own(be.zeros([batch * heads], 'int32') as CudaTensor) : null;
    this.foldKeysInFlight = be.foldKeysInFlightFor(blocks);
    this.upPrefetch = options.upPrefetchBytes ?? upPrefetchBytesFor(be.l2PrefetchUpBytes, batch);
    this.pipeline = options.pipeline ?? be.pipelineDecode;
    this.pinned = new PinnedBuffer(4 * (batch + 2), 'the decoder\'s token read-back');
    this.pinnedIds = new Int32Array(this.pinned.view, 0, batch);
    this.pinnedFlag = new Int32Array(this.pinned.view, 4 * batch, 2);
    this.readback = new CudaEvent(be.ctx, CU_EVENT_DISABLE_TIMING);
  }
  private readonly foldKeysInFlight: number;
  private readonly upPrefetch: number;
  private readonly decodeSplits: number;
  private readonly foldSplits: number;
  private readonly foldPerSplit: number;
  private readonly foldPartial: CudaTensor | null;
  private readonly foldCounters: CudaTensor | null;

  /** Activation buffers for t new positions of every row. */
  private buffers(t: number) {
    const rows = this.batch * t, be = this.be;
    const own = (shape: number[], dtype?: 'int32' | 'float32') => { const x = be.alloc(shape, dtype); this.owned.push(x); return x; };
    return {
      t, rows,
      ids: own([rows], 'int32'),
      x: own([rows, this.d], 'float32'), h: own([rows, this.d]), qkv: own([rows, 3 * this.d]), q: own([rows, this.d]),
      att: own([rows, this.d]), up: own([rows, this.hidden]),
      last: own([this.batch], 'int32'),
      // float32 [rows, d/16, 2]: per-16-column mean and M2 of the residual stream (skinny GEMMs only)
      stats: be.rowStatsFrom(rows, this.hidden, this.d) && be.rowStatsFrom(rows, this.d, this.d) ? own([rows, this.d / 8], 'float32') : null,
      // float32 [rows, 3d/16, 2]: the same of the QKV GEMM's output, for attention with the split folded in
      qkvStats: t === 1 && be.activationDType === 'bfloat16' && be.rowStatsFrom(rows, this.d, 3 * this.d) ? own([rows, 3 * this.d / 8], 'float32') : null,
    };
  }

  private stage(name: string): void {
    this.onStage?.(name);
  }

  /**
   * The body shared by prefill and decode. `posDev`: read positions from the device counter (decode);
   * else the host's `this.length`.
   */
  private forward(buf: ReturnType<CudaDecoder['buffers']>, idsPtr: number, posDev: boolean): void {
    const { be, c, d, p } = this;
    const rows = buf.rows, t = buf.t;
    const w = (x: Tensor) => asCuda(x, 'decoder weight');
    const wb = (a: Affine) => (a.bias ? w(a.bias) : null);
    const el = (name: string, n: number, args: number[]) => be.launch1d('elementwise.cu', name, n, args);
    el('gather_rows_f32', rows * d, [w(p.wte).ptr, idsPtr, buf.x.ptr, rows, d, c.vocabSize, be.errorFlag]);
    this.stage('embedding');
    const mask = this.padded ? this.mask : null;
    for (let layer = 0; layer < p.blocks.length; layer++) {
      const blk = p.blocks[layer];
      // buf.stats holds the stream's statistics once a GEMM has added into it (not after the embedding).
      const ln1 = { w: w(blk.ln1.weight), b: wb(blk.ln1), eps: c.layerNormEps };
      const fold = posDev && buf.qkvStats !== null && be.foldQkvSplit;
      if (fold) {
        // A decode step: the QKV GEMM clamps and writes row statistics; attention does the split.
        be.layerNormMatmulInto(buf.x, ln1, buf.h, w(blk.wqkv.weight), wb(blk.wqkv), buf.qkv, rows, false, false, layer > 0 ? buf.stats : null,
          { statsOut: buf.qkvStats, clip: c.clipQkv ?? 0 });
        this.stage('ln_gemm_qkv');
        const qkLn = blk.qLn && blk.kLn;
        be.decodeAttentionQkvInto({
          qkv: buf.qkv, stats: buf.qkvStats!, qLn: qkLn ? { w: w(blk.qLn!.weight), b: wb(blk.qLn!) } : null, kLn: qkLn ? { w: w(blk.kLn!.weight), b: wb(blk.kLn!) } : null,
          kCache: this.kCache[layer], vCache: this.vCache[layer], mask, slopes: this.slopes, out: buf.att, batch: this.batch, capacity: this.capacity,
          posDev: this.position.ptr, nHeads: c.nHeads, dHead: d / c.nHeads, eps: c.layerNormEps, scale: c.softmaxScale ?? 1 / Math.sqrt(d / c.nHeads),
          splits: this.foldSplits, partial: this.foldPartial, counters: this.foldCounters, perSplit: this.foldPerSplit,
          keysInFlight: this.foldKeysInFlight,
        });
      } else {
        be.layerNormMatmulInto(buf.x, ln1, buf.h, w(blk.wqkv.weight), wb(blk.wqkv), buf.qkv, rows, false, false, layer > 0 ? buf.stats : null);
        this.stage('ln_gemm_qkv');
        const v8 = be.vectorRows(d, [buf.qkv]);
        be.kernels.get('qkv.cu', v8 ? 'qkv_split8' : 'qkv_split', be.defs()).launch([rows, 3], [v8 ? be.rowThreads8(d) : be.rowThreads(d)], [
          buf.qkv.ptr, buf.q.ptr, this.kCache[layer].ptr, this.vCache[layer].ptr,
          blk.qLn ? w(blk.qLn.weight).ptr : 0, blk.qLn?.bias ? w(blk.qLn.bias).ptr : 0,
          blk.kLn ? w(blk.kLn.weight).ptr : 0, blk.kLn?.bias ? w(blk.kLn.bias).ptr : 0,
          t, d, this.capacity, posDev ? this.position.ptr : 0, posDev ? 0 : this.length,
          c.clipQkv ?? 0, blk.qLn && blk.kLn ? 1 : 0, c.layerNormEps]);
        this.stage('qkv_split');
        be.attentionInto({
          q: buf.q, k: this.kCache[layer], v: this.vCache[layer], out: buf.att, mask, slopes: this.slopes,
          batch: this.batch, tq: t, capacity: this.capacity, kvLen: posDev ? t : this.length + t, kvLenDev: posDev ? this.position.ptr : 0,
          splits: posDev ? this.decodeSplits : undefined,
          nHeads: c.nHeads, dHead: d / c.nHeads, qStride: d, kvStride: d, oStride: d, scale: c.softmaxScale ?? 1 / Math.sqrt(d / c.nHeads),
        });
      }
      this.stage(t > 1 ? 'attention_prefill' : 'attention_decode');
      // Decode: the out-projection's blocks wait through the attention with their weights loaded, so
      // they prefetch the head of the up GEMM's weights into L2 meanwhile (upPrefetchBytesFor).
      const upW = w(blk.up.weight);
      be.matmulInto(buf.att, w(blk.out.weight), wb(blk.out), buf.x, rows, true, false,
        { statsOut: buf.stats, prefetch: posDev ? { ptr: upW.ptr, bytes: headBytes(upW, this.upPrefetch) } : null });
      this.stage('gemm_out');
      be.layerNormMatmulInto(buf.x, { w: w(blk.ln2.weight), b: wb(blk.ln2), eps: c.layerNormEps }, buf.h, w(blk.up.weight), wb(blk.up), buf.up, rows, false, true,
        buf.stats);
      this.stage('ln_gemm_up_gelu');
      be.matmulInto(buf.up, w(blk.down.weight), wb(blk.down), buf.x, rows, true, false, { statsOut: buf.stats });
      this.stage('gemm_down');
    }
    if (this.allLogits) {
      // Every position's logits (checks against the reference): LN_f of all rows, then one GEMM.
      be.layerNormInto(buf.x, null, w(p.lnF.weight), wb(p.lnF), buf.h, rows, d, c.layerNormEps);
      be.matmulInto(buf.h, w(p.lmHead ?? p.wte), null, this.allLogits, rows, false);
      if (c.logitScale !== null) {
        be.launch1d('elementwise.cu', 'scale', rows * c.vocabSize, [this.allLogits.ptr, this.allLogits.ptr, c.logitScale, rows * c.vocabSize], { MPT_BF16: false });
      }
    }
    // Logits of each row's last position only.
    let src = buf.x;
    if (t > 1) {
      be.launch1d('elementwise.cu', 'gather_rows', this.batch * d, [buf.x.ptr, buf.last.ptr, this.lastRows.ptr, this.batch, d, rows, be.errorFlag], { MPT_BF16: false });
      src = this.lastRows;
    }
    be.layerNormMatmulInto(src, { w: w(p.lnF.weight), b: wb(p.lnF), eps: c.layerNormEps }, this.finalH, w(p.lmHead ?? p.wte), null, this.logits, this.batch, false,
      false, t === 1 && p.blocks.length > 0 ? buf.stats : null);
    if (c.logitScale !== null) {
      be.launch1d('elementwise.cu', 'scale', this.batch * c.vocabSize, [this.logits.ptr, this.logits.ptr, c.logitScale, this.batch * c.vocabSize], { MPT_BF16: false });
    }
    this.stage('logits');
    be.sampleInto(this.logits, this.nextIds, { ...this.sampling, stepDev: posDev ? this.position.ptr : 0, step: posDev ? 0 : this.length + t });
    this.stage('sample');
  }

  /**
   * Run left-padded prompts ids [batch, t] (mask [batch, t]: 1 real, 0 padding; null: all real) into an
   * empty cache and return the first chosen token of each row.
   */
  prefill(ids: Int32Array, mask: Int32Array | null, sampling: GpuSampling): Int32Array {
    return this.prefillWith(ids, mask, sampling, false).ids;
  }

  /** As prefill, also returning the float32 logits of every position [batch·t, vocab] (for checks). */
  prefillAllLogits(ids: Int32Array, mask: Int32Array | null, sampling: GpuSampling): { ids: Int32Array; logits: Float32Array } {
    const r = this.prefillWith(ids, mask, sampling, true);
    return { ids: r.ids, logits: r.logits! };
  }

  private allLogits: CudaTensor | null = null;

  private prefillWith(ids: Int32Array, mask: Int32Array | null, sampling: GpuSampling, all: boolean): { ids: Int32Array; logits: Float32Array | null } {
    const t = ids.length / this.batch;
    if (!Number.isInteger(t) || t < 1) throw new Error(`prefill: ${ids.length} ids do not make ${this.batch} rows`);
    if (t + 1 > this.capacity) throw new Error(`prefill: ${t} positions and a next one exceed the cache's ${this.capacity}`);
    this.settle();
    this.ahead = false;
    this.sampling = sampling;
    this.length = 0;
    this.hostMask.fill(1);
    this.padded = false;
    if (mask) {
      for (let b = 0; b < this.batch; b++) for (let i = 0; i < t; i++) {
        const m = mask[b * t + i] ? 1 : 0;
        this.hostMask[b * this.capacity + i] = m;
        if (!m) this.padded = true;
      }
    }
    this.be.ctx.copyInAsync(this.mask.ptr, this.hostMask);
    // The captured step bakes in the sampling settings and whether a mask is read: recapture on change.
    const key = `${JSON.stringify(sampling)}:${this.padded}`;
    if (key !== this.graphKey) {
      this.destroyGraphs();
      this.eagerSteps = 0;
      this.graphKey = key;
    }
    const buf = t === 1 ? this.step1 : this.prefillBuffers(t);
    this.be.ctx.copyInAsync(buf.ids.ptr, ids);
    this.be.ctx.copyInAsync(buf.last.ptr, Int32Array.from({ length: this.batch }, (_, b) => b * t + t - 1));
    if (all) this.allLogits = this.be.alloc([this.batch * t, this.c.vocabSize], 'float32');
    let logits: Float32Array | null = null;
    try {
      this.turnLogits();
      this.forward(buf, buf.ids.ptr, false);
      if (this.allLogits) logits = this.be.download(this.allLogits) as Float32Array;
    } finally {
      if (this.allLogits) this.be.release(this.allLogits);
      this.allLogits = null;
    }
    this.length = t;
    this.be.ctx.fill32(this.position.ptr, t, 1);
    this.shownLogits = this.logits;
    this.unread = true;
    return { ids: this.readIds(), logits };
  }

  private prefillCache = new Map<number, ReturnType<CudaDecoder['buffers']>>();
  private prefillBuffers(t: number) {
    let b = this.prefillCache.get(t);
    if (!b) {
      for (const old of this.prefillCache.values()) this.drop(old);
      this.prefillCache.clear();
      b = this.buffers(t);
      this.prefillCache.set(t, b);
    }
    return b;
  }

  private drop(buf: ReturnType<CudaDecoder['buffers']>): void {
    for (const x of [buf.ids, buf.x, buf.h, buf.qkv, buf.q, buf.att, buf.up, buf.last, buf.stats, buf.qkvStats]) {
      if (!x) continue;
      this.be.release(x);
      this.owned.splice(this.owned.indexOf(x), 1);
    }
  }

  /** The next forward writes the other logits buffer (and replays the other graph). */
  private turnLogits(): void {
    this.logits = this.logitsPair[this.logitsTurn];
    this.logitsTurn ^= 1;
  }

  /** Enqueue one decode step after everything enqueued so far; no host sync. */
  private enqueue(): void {
    if (this.length + 1 > this.capacity) throw new Error(`decode: the cache's ${this.capacity} positions are full`);
    const turn = this.logitsTurn;
    this.turnLogits();
    const useGraph = this.options.graphs !== false;
    let graph = this.graphs[turn];
    if (!graph && useGraph && this.eagerSteps >= 1) graph = this.graphs[turn] = this.be.captureGraph(() => this.decodeBody());
    if (graph) {
      graph.replay();
    } else {
      this.decodeBody();
      this.eagerSteps++;
    }
    this.length += 1;
  }

  /**
   * Enqueue one decode step (the tokens chosen last become the input) without reading its tokens:
   * readIds() and lastLogits() give them (timing and checks). A step that step() ran ahead counts as this one.
   */
  enqueueStep(): void {
    if (this.ahead) this.ahead = false;
    else this.enqueue();
    this.shownLogits = this.logits;
    this.unread = true;
  }

  /** The decode step's work, enqueued as is (graph capture in benchmarks); advances the device position. */
  decodeBody(): void {
    this.forward(this.step1, this.nextIds.ptr, true);
    this.be.launch1d('elementwise.cu', 'advance', 1, [this.position.ptr, 1]);
  }

  /** One decode step; returns the next token of each row. */
  step(): Int32Array {
    if (!this.ahead) this.enqueue();
    const stepLogits = this.logits;
    // Copy this step's tokens (and the error flag) out behind an event, then put the next step in the
    // queue before waiting, as long as the cache has room for it.
    const ctx = this.be.ctx;
    ctx.copyOutAsync(this.pinned, this.nextIds.ptr, 4 * this.batch);
    ctx.copyOutAsync(this.pinned, this.be.errorFlag, 8, 4 * this.batch);
    this.readback.record();
    this.ahead = this.pipeline && this.length + 1 <= this.capacity;
    if (this.ahead) this.enqueue();
    this.readback.synchronize();
    this.shownLogits = stepLogits;
    this.unread = false;
    if (this.pinnedFlag[0] !== 0) this.be.checkErrors(); // throws, naming the bad id, and clears the flag
    this.lastIds = this.pinnedIds.slice();
    return this.lastIds.slice();
  }

  /** The tokens chosen by the last step or prefill. */
  readIds(): Int32Array {
    if (this.unread) {
      this.lastIds = this.be.download(this.nextIds) as Int32Array;
      this.unread = false;
    }
    return this.lastIds.slice();
  }

  /** The logits [batch, vocab] of the last step or prefill, as float32 (for checks); a step run ahead does not touch them. */
  lastLogits(): Float32Array {
    return this.be.download(this.shownLogits) as Float32Array;
  }

  /** Wait for a step run ahead (before graphs or buffers go away, or a new prefill's setup). */
  private settle(): void {
    if (this.ahead) this.be.synchronize();
  }

  private destroyGraphs(): void {
    this.settle();
    for (const g of this.graphs) g?.destroy();
    this.graphs = [null, null];
  }

  get graphCaptured(): boolean {
    return this.graphs.some((g) => g !== null);
  }

  /** Whether a decode step was enqueued ahead of the tokens returned last (tests). */
  get steppedAhead(): boolean {
    return this.ahead;
  }

  private released = false;

  release(): void {
    if (this.released) return;
    this.released = true;
    this.destroyGraphs();
    this.ahead = false;
    for (const t of this.owned) this.be.release(t);
    this.owned.length = 0;
    this.pinned.free();
    this.readback.destroy();
  }
}
