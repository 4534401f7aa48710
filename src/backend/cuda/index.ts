/**
 * The CUDA backend: tensors in device memory from a caching allocator, ops as NVRTC-compiled kernels
 * (kernels/*.cu) and cuBLASLt GEMMs, all enqueued on one stream. Activations are bfloat16 (fp32
 * accumulation everywhere) or float32 when asked (for checking against the CPU).
 */
import { elementCount, width, rowCount, type AttentionArgs, type Backend, type DType, type HostArray, type Tensor } from '../backend.js';
import { UserError } from '../../util/errors.js';
import { CachingAllocator } from './allocator.js';
import { CublasLt } from './cublaslt.js';
import { CudaContext, CudaGraph, driver, cu, type Kernel } from './driver.js';
import { buildGeluTable, GELU_TABLE_SHAPE, launchGeluTable, type GeluTableShape } from './gelu-table.js';
import { KernelCache } from './kernels.js';
import type { MptConfig } from '../../model/config.js';
import { CudaDecoder, type DecoderOptions, type DecoderParams } from './decoder.js';
import { asCuda, bytesPer, CudaTensor, DeviceBlock } from './tensor.js';
import { CudaTrainingOps } from './training.js';
import { flashPrefillShape, launchFlashForward } from './flash.js';

export { CudaTensor } from './tensor.js';
export { CudaError } from './driver.js';
export { CudaDecoder, type GpuSampling, type DecoderParams } from './decoder.js';

export interface CudaBackendOptions {
  device?: number;
  /** 'bfloat16' (default) or 'float32' activations and weights. */
  dtype?: 'bfloat16' | 'float32';
}

/** Whether the CUDA backend can run here: a driver that loads and at least one device. Never throws. */
export function cudaAvailable(): { ok: boolean; reason?: string } {
  try {
    const { fns } = driver();
    const init = fns.cuInit(0) as number;
    if (init !== 0) {
      const name: (string | null)[] = [null];
      fns.cuGetErrorName(init, name);
      return { ok: false, reason: `cuInit failed: ${name[0] ?? `CUresult ${init}`}` };
    }
    const count = [0];
    const code = fns.cuDeviceGetCount(count) as number;
    if (code !== 0 || count[0] < 1) return { ok: false, reason: 'no CUDA device found' };
    return { ok: true };
  } catch (error) {
    return { ok: false, reason: error instanceof Error ? error.message : String(error) };
  }
}

const THREADS = 256;
/**
 * Shared memory a block of skinny_gemm.cu's MPT_SMEM_W variant may take (16 weight rows of K ≤ ~3,500
 * and its partial tiles): about half an H100 SM's 228 KB, so the blocks of the kernels before and after
 * it still fit beside it.
 */
const SMEM_W_MAX_BYTES = 116 * 1024;
/** cuFuncSetAttribute's CUfunction_attribute for the preferred L1/shared split (percent of the most shared). */
const CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT = 9;

/** A byte count from an environment variable given in MiB (whole or fractional), else `fallbackMiB` MiB. */
export function mbFromEnv(name: string, fallbackMiB: number): number {
  const value = process.env[name];
  const mib = value === undefined || value === '' ? fallbackMiB : Number(value);
  if (!Number.isFinite(mib) || mib < 0) throw new UserError(`${name} is "${value}": give a size in MiB (0 or more)`);
  return Math.round(mib * 2 ** 20);
}

/** CudaBackend.layerCarveout from $MPT_CUDA_CARVEOUT: unset 50, `driver` null (the driver's choice), else 0–100. */
function carveoutFromEnv(value: string | undefined): number | null {
  if (value === undefined || value === '') return 50;
  if (value === 'driver') return null;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 100) {
    throw new UserError(`MPT_CUDA_CARVEOUT is "${value}": give a whole percentage from 0 to 100, or "driver"`);
  }
  return n;
}

/**
 * An L2 prefetch a few-row GEMM issues before its programmatic wait (skinny_gemm.cu
 * l2_prefetch_share): the first `bytes` of the tensor at `ptr`, normally the next GEMM's weights.
 */
export interface L2Prefetch { ptr: number; bytes: number }

/** [begin, end) device addresses of a prefetch, in whole 128-byte lines, or [0, 0] for none. */
function prefetchRange(p: L2Prefetch | null): [number, number] {
  const bytes = p ? Math.floor(p.bytes / 128) * 128 : 0;
  if (!p || bytes <= 0) return [0, 0];
  if (p.ptr % 16 !== 0) throw new Error(`L2 prefetch: address ${p.ptr} is not 16-byte aligned`);
  return [p.ptr, p.ptr + bytes];
}

/**
 * Warps a block and k-steps per load group for skinny_gemm.cu: about 2048 warps over the chip, and
 * K divisible by 32·unroll·warps; null when K does not divide (then cuBLASLt runs it).
 */
function skinnyPlan(inF: number, outF: number, rows: number, wide: boolean, fewer = false): { warps: number; unroll: number } | null {
  const tiles = Math.ceil(outF / 16);
  // Measured on the H100 (bench gemm table, 2026-11-27): one row tile wants 8 warps below ~400 output
  // tiles and 4 above; two row tiles (9–16 rows) 4 warps from 384 tiles, and half the unroll at ~512.
  // `wide`: one row tile and no more blocks than SMs (the out-projection and MLP-down GEMMs): 16 warps,
  // one block an SM with twice the loads in flight (the kernel fits 128 registers a thread).
  const want = rows > 8 ? (tiles >= 384 ? 4 : 8) : wide ? 16 : fewer && tiles >= 384 ? 4
    : Math.min(8, Math.max(4, 2 ** Math.ceil(Math.log2(Math.max(1, 2048 / tiles))))); // ≤ 256 threads
  const unrolls = rows > 8 && tiles >= 512 && tiles < 1024 ? [2, 1] : [4, 2, 1];
  for (const unroll of unrolls) {
    for (let warps = want; warps >= 1; warps /= 2) if (inF % (32 * unroll * warps) === 0) return { warps, unroll };
  }
  return null;
}

export class CudaBackend implements Backend {
  readonly name = 'cuda' as const;
  readonly activationDType: 'bfloat16' | 'float32';
  readonly ctx: CudaContext;
  readonly allocator = new CachingAllocator();
  readonly kernels: KernelCache;
  readonly blas: CublasLt;
  private readonly scopes: CudaTensor[][] = [];
  /** int32 [2] on the device: {1, id} once a gather saw an id out of range. */
  readonly errorFlag: number;
  private readonly slopeCache = new WeakMap<Float32Array, CudaTensor>();
  private partial: CudaTensor | null = null;
  private readonly maxBlocks: number;

  constructor(options: CudaBackendOptions = {}) {
    const ok = cudaAvailable();
    if (!ok.ok) throw new UserError(`CUDA is not usable here: ${ok.reason}`);
    this.activationDType = options.dtype ?? 'bfloat16';
    this.ctx = new CudaContext(options.device ?? 0);
    this.kernels = new KernelCache(this.ctx);
    this.blas = new CublasLt(this.ctx);
    this.errorFlag = this.allocator.alloc(8);
    this.ctx.fill32(this.errorFlag, 0, 2);
    this.maxBlocks = this.ctx.device.multiprocessors * 16;
  }

  get device() { return this.ctx.device; }

  /** Defines for kernels in the activation dtype. */
  defs(extra: Record<string, string | number | boolean> = {}) {
    return { MPT_BF16: this.activationDType === 'bfloat16', ...extra };
  }

  // ---- memory -------------------------------------------------------------------------------

  alloc(shape: readonly number[], dtype: DType = this.activationDType): CudaTensor {
    const bytes = Math.max(elementCount(shape) * bytesPer(dtype), 1);
    const t = new CudaTensor([...shape], dtype, new DeviceBlock(this.allocator.alloc(bytes), bytes));
    this.scopes[this.scopes.length - 1]?.push(t);
    return t;
  }

  release(t: Tensor): void {
    const c = asCuda(t, 'release');
    if (!c.block.live) return;
    c.block.live = false;
    this.allocator.release(c.block.ptr);
  }

  scope<T>(fn: () => T): T {
    const mine: CudaTensor[] = [];
    this.scopes.push(mine);
    let result: T;
    try {
      result = fn();
    } finally {
      this.scopes.pop();
    }
    const keep = new Set<DeviceBlock>();
    const visit = (v: unknown, depth: number): void => {
      if (depth > 6 || v === null || typeof v !== 'object') return;
      if (v instanceof CudaTensor) { keep.add(v.block); return; }
      if (Array.isArray(v)) { for (const x of v) visit(x, depth + 1); return; }
      if (v instanceof Map) { for (const x of v.values()) visit(x, depth + 1); return; }
      if (Object.getPrototypeOf(v) === Object.prototype) for (const x of Object.values(v)) visit(x, depth + 1);
    };
    visit(result!, 0);
    const parent = this.scopes[this.scopes.length - 1];
    for (const t of mine) {
      if (keep.has(t.block)) parent?.push(t);
      else this.release(t);
    }
    return result!;
  }

  /**
   * Float32 values stored as bf16, or bf16 bits as float32: staged as they are and converted on the
   * device, the staging block going straight back to the cache.
   */
  private uploadConverted(data: Float32Array | Uint16Array, shape: readonly number[], dtype: 'bfloat16' | 'float32'): CudaTensor {
    const n = data.length, toBf16 = dtype === 'bfloat16';
    const staging = this.allocator.alloc(data.byteLength);
    this.ctx.copyIn(staging, data);
    const out = this.alloc(shape, dtype);
    this.launch1d('elementwise.cu', toBf16 ? 'f32_to_t' : 'bf16_to_t', n, [staging, out.ptr, n], { MPT_BF16: toBf16 });
    this.ctx.synchronize();
    this.allocator.release(staging);
    return out;
  }

  upload(data: HostArray, shape: readonly number[], dtype: DType): Tensor {
    const n = elementCount(shape);
    if (data.length !== n) throw new Error(`upload: ${data.length} values for shape [${shape.join(', ')}] (${n} elements)`);
    if ((dtype === 'bfloat16' && data instanceof Float32Array) || (dtype === 'float32' && data instanceof Uint16Array)) {
      return this.uploadConverted(data, shape, dtype);
    }
    const expected = dtype === 'int32' ? Int32Array : dtype === 'float32' ? Float32Array : Uint16Array;
    if (!(data instanceof expected)) throw new Error(`upload: ${data.constructor.name} cannot be stored as ${dtype}`);
    const out = this.alloc(shape, dtype);
    if (n > 0) this.ctx.copyIn(out.ptr, data);
    return out;
  }

  /** Throws if a kernel recorded a bad input (an embedding id out of range) since the last check. */
  checkErrors(): void {
    const flag = new Int32Array(2);
    this.ctx.copyOut(flag, this.errorFlag);
    if (flag[0] !== 0) {
      this.ctx.fill32(this.errorFlag, 0, 2);
      throw new UserError(`embedding: token id ${flag[1]} is outside the vocabulary`);
    }
  }

  download(t: Tensor): Float32Array | Int32Array {
    const c = asCuda(t, 'download');
    const n = elementCount(c.shape);
    this.checkErrors();
    if (c.dtype === 'int32') { const out = new Int32Array(n); if (n) this.ctx.copyOut(out, c.ptr); return out; }
    if (c.dtype === 'float32') { const out = new Float32Array(n); if (n) this.ctx.copyOut(out, c.ptr); return out; }
    const bits = new Uint16Array(n);
    if (n) this.ctx.copyOut(bits, c.ptr);
    const out = new Float32Array(n), u32 = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) u32[i] = bits[i] << 16;
    return out;
  }

  zeros(shape: readonly number[], dtype: DType = this.activationDType): Tensor {
    const t = this.alloc(shape, dtype);
    cu('cuMemsetD8Async', t.ptr, 0, t.block.bytes, this.ctx.stream);
    return t;
  }

  view(t: Tensor, shape: readonly number[]): Tensor {
    const c = asCuda(t, 'view');
    if (elementCount(shape) !== elementCount(c.shape)) {
      throw new Error(`view: [${c.shape.join(', ')}] has ${elementCount(c.shape)} elements, [${shape.join(', ')}] needs ${elementCount(shape)}`);
    }
    return new CudaTensor([...shape], c.dtype, c.block, c.offset);
  }

  synchronize(): void {
    this.ctx.synchronize();
  }

  // ---- launching ----------------------------------------------------------------------------

  launch1d(file: string, name: string, n: number, args: number[], defines = this.defs()): void {
    if (n <= 0) return;
    const blocks = Math.min(Math.ceil(n / THREADS), this.maxBlocks);
    this.kernels.get(file, name, defines).launch([blocks], [THREADS], args);
  }

  /** A float tensor in the activation dtype: converted (into the current scope) when it is not. */
  private act(t: Tensor, what: string): CudaTensor {
    const c = asCuda(t, what);
    if (c.dtype === this.activationDType) return c;
    const n = elementCount(c.shape);
    const out = this.alloc(c.shape);
    if (c.dtype === 'float32') this.launch1d('elementwise.cu', 'f32_to_t', n, [c.ptr, out.ptr, n]);
    else if (c.dtype === 'bfloat16') this.launch1d('elementwise.cu', 'bf16_to_t', n, [c.ptr, out.ptr, n]);
    else throw new Error(`${what}: a ${c.dtype} tensor where ${this.activationDType} values are expected`);
    return out;
  }

  private int(t: Tensor, what: string): CudaTensor {
    const c = asCuda(t, what);
    if (c.dtype !== 'int32') throw new Error(`${what}: expected int32, got ${c.dtype}`);
    return c;
  }

  // ---- ops ----------------------------------------------------------------------------------

  embedding(ids: Tensor, table: Tensor): Tensor {
    const i = this.int(ids, 'embedding ids'), tab = this.act(table, 'embedding table');
    const n = elementCount(i.shape), d = width(tab), vocab = tab.shape[0];
    const out = this.alloc([n, d]);
    this.launch1d('elementwise.cu', 'gather_rows', n * d, [tab.ptr, i.ptr, out.ptr, n, d, vocab, this.errorFlag]);
    return out;
  }

  add(a: Tensor, b: Tensor): Tensor {
    const x = this.act(a, 'add'), y = this.act(b, 'add');
    const n = elementCount(x.shape);
    if (elementCount(y.shape) !== n) throw new Error(`add: shapes [${x.shape}] and [${y.shape}] differ`);
    const out = this.alloc(x.shape);
    this.launch1d('elementwise.cu', 'add', n, [x.ptr, y.ptr, out.ptr, n]);
    return out;
  }

  layerNorm(x: Tensor, weight: Tensor, bias: Tensor | null, eps: number): Tensor {
    const xx = this.act(x, 'layerNorm'), w = this.act(weight, 'layerNorm weight');
    const b = bias ? this.act(bias, 'layerNorm bias') : null;
    const d = width(xx), rows = rowCount(xx);
    const out = this.alloc(xx.shape);
    this.layerNormInto(xx, null, w, b, out, rows, d, eps);
    return out;
  }

  /** Threads for a row kernel that holds up to 16 values a thread in registers (layernorm.cu, qkv.cu). */
  rowThreads(d: number): number {
    const threads = Math.min(1024, Math.max(32, Math.ceil(d / 8 / 32) * 32));
    if (d > threads * 16) throw new Error(`rows of width ${d} are wider than the row kernels hold (${threads * 16})`);
    return threads;
  }

  /** Threads for the 16-byte row kernels (layernorm8, qkv_split8): two chunks of 8 values a thread at most. */
  rowThreads8(d: number): number {
    return Math.min(1024, Math.max(32, Math.ceil(d / 8 / 32) * 32));
  }

  /** Whether rows of width d over these tensors can take the 16-byte row kernels. */
  vectorRows(d: number, tensors: (CudaTensor | null)[]): boolean {
    return d % 8 === 0 && d / 8 <= 2 * this.rowThreads8(d) && tensors.every((t) => !t || t.ptr % 16 === 0);
  }

  /**
   * out ← LayerNorm(x) over rows of width d; with `residual`, x ← x + residual first (in place).
   * x (and residual) may be float32 on a bf16 backend: the decoder's residual stream.
   */
  layerNormInto(x: CudaTensor, residual: CudaTensor | null, w: CudaTensor, b: CudaTensor | null, out: CudaTensor,
    rows: number, d: number, eps: number): void {
    if (rows === 0) return;
    const kernel = this.layerNormKernel(x, residual, w, b, out, rows, d), xF32 = x.dtype === 'float32';
    if (kernel === 'layernorm_rows8') {
      const warps = this.layerNormRowWarps;
      this.kernels.get('layernorm.cu', kernel, this.defs({ MPT_X_F32: xF32, LN_VW: this.rowThreads8(d) / 32 }))
        .launch([Math.ceil(rows / warps)], [32 * warps], [x.ptr, w.ptr, b?.ptr ?? 0, out.ptr, rows, d, eps]);
    } else {
      this.kernels.get('layernorm.cu', kernel, this.defs({ MPT_X_F32: xF32 }))
        .launch([rows], [kernel === 'layernorm8' ? this.rowThreads8(d) : this.rowThreads(d)], [x.ptr, residual?.ptr ?? 0, w.ptr, b?.ptr ?? 0, out.ptr, d, eps]);
    }
  }

  /** The kernel layerNormInto runs for these arguments (tests check which one they compare). */
  layerNormKernel(x: CudaTensor, residual: CudaTensor | null, w: CudaTensor, b: CudaTensor | null, out: CudaTensor,
    rows: number, d: number): 'layernorm_rows8' | 'layernorm8' | 'layernorm' {
    if (!this.vectorRows(d, [x, residual, w, b, out])) return 'layernorm';
    const rowBytes = d * (x.dtype === 'float32' ? 4 : 2);
    const warpRows = this.layerNormWarpRows && !residual && rows >= this.layerNormWarpRowsFrom && rowBytes <= 8192;
    return warpRows ? 'layernorm_rows8' : 'layernorm8';
  }

  /**
   * Whether layerNormInto takes layernorm_rows8 (a warp a row, no barrier; bit-identical to layernorm8,
   * whose reduction tree it keeps) for rows of at most 8 KB without the residual add, from
   * layerNormWarpRowsFrom rows on; MPT_CUDA_LN_ROWS=0 keeps layernorm8 everywhere (comparisons).
   * Measured on the H100 (2026-11-28, bench/RESULTS-cuda-train.md): bf16 [16384, 2048] alone 0.0632 against
   * 0.0748 ms back to back, 0.0502 against 0.0579 right after a kernel wrote x; in the training step
   * 121 calls 6.02 against 7.41 ms.
   */
  layerNormWarpRows = process.env.MPT_CUDA_LN_ROWS !== '0';
  /**
   * Fewer rows than this keep layernorm8: at [2048, 2048] (one prompt's prefill) layernorm_rows8 was no
   * faster (4 rows a block: 0.0182 against 0.0163 ms back to back, 0.0106 against 0.0105 after a write),
   * and the decoder's few rows spread over more SMs a block a row. Nothing between 2048 and 16384 rows
   * was measured.
   */
  layerNormWarpRowsFrom = 8192;
  /** Rows (warps) a block of layernorm_rows8: 4 (0.0502 ms after a write at 16384 rows; 2: 0.0501, 8: 0.0509). */
  layerNormRowWarps = 4;

  linear(x: Tensor, weight: Tensor, bias: Tensor | null): Tensor {
    const xx = this.act(x, 'linear'), w = this.act(weight, 'linear weight');
    const b = bias ? this.act(bias, 'linear bias') : null;
    const inF = width(xx), rows = rowCount(xx), outF = w.shape[0];
    if (w.shape[1] !== inF) throw new Error(`linear: input width ${inF} but weight [${w.shape.join(', ')}]`);
    const out = this.alloc([...xx.shape.slice(0, -1), outF]);
    this.matmulInto(xx, w, b, out, rows, false);
    return out;
  }

  /**
   * The skinny_gemm.cu block shape for a rows × inF → outF GEMM, or null where cuBLASLt runs it (not
   * bf16, more than 16 rows, skinny GEMMs off, or K that no shape divides).
   */
  private skinnyFor(rows: number, inF: number, outF: number): { warps: number; unroll: number } | null {
    if (!this.skinny || this.activationDType !== 'bfloat16' || rows > 16) return null;
    const plan = this.skinnyShape ? { ...this.skinnyShape }
      : skinnyPlan(inF, outF, rows, this.wideSkinny && rows <= 8 && Math.ceil(outF / 16) <= this.ctx.device.multiprocessors, this.qkvFourWarps);
    if (plan && inF % (32 * plan.unroll * plan.warps) !== 0) throw new Error(`skinny GEMM: K ${inF} does not split as ${plan.warps} warps × ${plan.unroll}`);
    return plan;
  }

  /**
   * Whether matmulInto can write row statistics (`statsOut`) for these shapes: the few-row bf16 GEMMs
   * of skinny_gemm.cu with outF % 16 == 0.
   */
  rowStatsFrom(rows: number, inF: number, outF: number): boolean {
    return outF % 16 === 0 && this.skinnyFor(rows, inF, outF) !== null;
  }

  /**
   * y (+)= x · Wᵀ (+ b) (→ exact GELU with `gelu`); y may be float32 on a bf16 backend (residual
   * stream, logits). Up to 16 rows in bf16 go to skinny_gemm.cu (decode: the weights are streamed once,
   * GELU fused); the rest to cuBLASLt. `statsOut` (float32 [rows, outF/16, 2], only where rowStatsFrom
   * says so): each row's per-16-column mean and M2 of the values written, for layerNormMatmulInto.
   * `clip` > 0: the stored values clamped to ±clip (skinny path only, as statsOut). `prefetch`: a range
   * (normally the next GEMM's weights) the skinny kernel's blocks L2-prefetch before their programmatic
   * wait (skinny_gemm.cu l2_prefetch_share); a hint only, ignored where cuBLASLt runs.
   */
  matmulInto(x: CudaTensor, w: CudaTensor, b: CudaTensor | null, y: CudaTensor, rows: number, accumulate: boolean, gelu = false,
    extra: { statsOut?: CudaTensor | null; clip?: number; prefetch?: L2Prefetch | null } = {}): void {
    if (rows === 0) return;
    const [outF, inF] = w.shape;
    const plan = this.skinnyFor(rows, inF, outF);
    const statsOut = extra.statsOut ?? null, clip = extra.clip ?? 0;
    if ((statsOut || clip > 0) && (!plan || outF % 16 !== 0)) {
      throw new Error(`matmulInto: row statistics or clamping asked of a ${rows}×${inF}→${outF} GEMM that skinny_gemm.cu does not run`);
    }
    const [pfBegin, pfEnd] = prefetchRange(extra.prefetch ?? null);
    const smem = plan && !this.skinnyShape ? this.smemWeightsPlan(rows, inF, outF) : null;
    if (smem) {
      this.layerKernel('skinny_gemm.cu', 'skinny_gemm', { MPT_BF16: true, ROW_TILES: smem.tiles, MPT_Y_F32: y.dtype === 'float32', MPT_SMEM_W: true,
        SMEM_STEPS: smem.steps, SKINNY_THREADS: smem.warps * 32 })
        .launch([Math.ceil(outF / 16)], [smem.warps * 32], [x.ptr, w.ptr, b?.ptr ?? 0, y.ptr, rows, inF, outF, accumulate ? 1 : 0, gelu ? 1 : 0, 0, 0, 0,
          0, statsOut?.ptr ?? 0, clip, pfBegin, pfEnd], smem.sharedBytes);
      return;
    }
    if (plan) {
      const yF32 = y.dtype === 'float32';
      const tiles = rows > 8 ? 2 : 1;
      this.layerKernel('skinny_gemm.cu', 'skinny_gemm', { MPT_BF16: true, ROW_TILES: tiles, UNROLL: plan.unroll, MPT_Y_F32: yF32,
        SKINNY_THREADS: plan.warps > 8 ? plan.warps * 32 : false })
        .launch([Math.ceil(outF / 16)], [plan.warps * 32], [x.ptr, w.ptr, b?.ptr ?? 0, y.ptr, rows, inF, outF, accumulate ? 1 : 0, gelu ? 1 : 0, 0, 0, 0,
          0, statsOut?.ptr ?? 0, clip, pfBegin, pfEnd], plan.warps * 16 * 8 * tiles * 4);
      return;
    }
    this.blas.matmul({ rows, inFeatures: inF, outFeatures: outF, x: x.ptr, w: w.ptr, y: y.ptr,
      bias: b ? b.ptr : null, accumulate, dtype: this.activationDType, outDType: y.dtype === 'float32' ? 'float32' : this.activationDType });
    if (gelu) this.geluInPlace(y, rows * outF);
  }

  /**
   * y (+)= LayerNorm(x)·Wᵀ (+ b) (→ exact GELU) for the decoder, x its float32 residual stream. With
   * `statsIn` (x's row statistics from the matmulInto that last added into it) and up to
   * fuseLayerNormRows bf16 rows, skinny_gemm.cu normalizes x in its prologue: one kernel instead of two.
   * Otherwise LayerNorm into `h`, then matmulInto. `extra` as matmulInto's.
   */
  layerNormMatmulInto(x: CudaTensor, ln: { w: CudaTensor; b: CudaTensor | null; eps: number }, h: CudaTensor,
    w: CudaTensor, b: CudaTensor | null, y: CudaTensor, rows: number, accumulate: boolean, gelu = false,
    statsIn: CudaTensor | null = null, extra: { statsOut?: CudaTensor | null; clip?: number } = {}): void {
    if (rows === 0) return;
    const [outF, inF] = w.shape;
    const plan = statsIn && this.fuseLayerNorm && rows <= Math.min(8, this.fuseLayerNormRows) && x.dtype === 'float32' && inF % 16 === 0
      && [x, ln.w, ln.b].every((t) => !t || t.ptr % 16 === 0) ? this.skinnyFor(rows, inF, outF) : null;
    if (!plan) {
      if (statsIn && this.layerNormFromStats && x.dtype === 'float32' && inF % 16 === 0 && this.vectorRows(inF, [x, ln.w, ln.b, h])) {
        this.layerKernel('layernorm.cu', 'layernorm_stats8', this.defs())
          .launch([rows], [this.rowThreads8(inF)], [x.ptr, statsIn.ptr, ln.w.ptr, ln.b?.ptr ?? 0, h.ptr, inF, ln.eps]);
      } else {
        this.layerNormInto(x, null, ln.w, ln.b, h, rows, inF, ln.eps);
      }
      this.matmulInto(h, w, b, y, rows, accumulate, gelu, extra);
      return;
    }
    const statsOut = extra.statsOut ?? null, clip = extra.clip ?? 0;
    if ((statsOut || clip > 0) && outF % 16 !== 0) throw new Error(`layerNormMatmulInto: row statistics of ${outF} outputs (not a multiple of 16)`);
    // Each warp's normalized K slice, [rows][inF / warps + 32] bf16, after the partial tiles. (At two
    // row tiles, 9–16 rows, this would take 64 KB a block; the variant that normalized in registers in
    // the main loop instead lost at batch 16: skinny_gemm.cu's header.)
    const shared = plan.warps * 16 * 8 * 4 + rows * (inF + 32 * plan.warps) * 2;
    this.layerKernel('skinny_gemm.cu', 'skinny_gemm', { MPT_BF16: true, ROW_TILES: 1, UNROLL: plan.unroll, MPT_Y_F32: y.dtype === 'float32', MPT_LN_X: true,
      LN_CHUNKS: Math.ceil(inF / plan.warps / 256),
      SKINNY_THREADS: plan.warps > 8 ? plan.warps * 32 : false })
      .launch([Math.ceil(outF / 16)], [plan.warps * 32], [x.ptr, w.ptr, b?.ptr ?? 0, y.ptr, rows, inF, outF, accumulate ? 1 : 0, gelu ? 1 : 0,
        ln.w.ptr, ln.b?.ptr ?? 0, ln.eps, statsIn!.ptr, statsOut?.ptr ?? 0, clip, 0, 0], shared);
  }

  /**
   * The shape of skinny_gemm.cu's MPT_SMEM_W variant (each block's 16 weight rows copied into shared
   * memory before its programmatic wait) for a rows × inF → outF GEMM, or null where it does not apply:
   * smemWeights off, K not a multiple of 32, more blocks than SMs (a block's copy runs ahead of the
   * wait only if the block is resident while the kernel before it runs), or more than
   * SMEM_W_MAX_BYTES of shared memory a block (room must stay for the blocks of the kernels around it).
   * The decoder's out-projection (2048 → 2048: 128 blocks of 64 KB) is the GEMM it is for.
   * Warps: enough that each has at most 8 (one row tile) or 4 (two) steps of 32 k, so its x stays in
   * registers (63–64 registers a thread); smemWeightsWarps overrides (benchmarks).
   */
  smemWeightsPlan(rows: number, inF: number, outF: number): { warps: number; tiles: number; steps: number; sharedBytes: number } | null {
    if (!this.smemWeights || !this.skinny || this.activationDType !== 'bfloat16' || rows < this.smemWeightsMinRows || rows > 16 || inF % 32 !== 0) return null;
    if (this.ctx.device.major < 9) return null; // the bulk copy and the mbarrier's transaction count are sm_90
    if (Math.ceil(outF / 16) > this.ctx.device.multiprocessors) return null;
    const tiles = rows > 8 ? 2 : 1, chunks = inF / 32;
    const warps = this.smemWeightsWarps ?? Math.min(16, Math.max(4, Math.ceil(chunks / (tiles === 1 ? 8 : 4))));
    const stride = inF % 64 === 0 ? inF + 32 : inF; // skinny_gemm.cu smem_w_stride
    const sharedBytes = warps * 16 * 8 * tiles * 4 + 16 * stride * 2;
    if (sharedBytes > SMEM_W_MAX_BYTES) return null;
    return { warps, tiles, steps: Math.ceil(chunks / warps), sharedBytes };
  }

  /**
   * The kernels of a decode layer (skinny GEMMs, the folded attention, the LayerNorm from statistics),
   * with layerCarveout applied: compiled with MPT_CARVEOUT=n (a define no source reads, so each setting
   * is a function of its own and graphs captured with another keep theirs) and given the preferred
   * shared-memory carveout n% once.
   */
  private layerKernel(file: string, name: string, defines: Record<string, string | number | boolean>): Kernel {
    const carve = this.layerCarveout;
    const kernel = this.kernels.get(file, name, carve === null ? defines : { ...defines, MPT_CARVEOUT: carve });
    if (carve !== null && !this.carved.has(kernel)) {
      cu('cuFuncSetAttribute', kernel.handle, CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, carve);
      this.carved.add(kernel);
    }
    return kernel;
  }
  private readonly carved = new WeakSet<Kernel>();
  /**
   * The preferred shared-memory carveout (percent of the most an SM can hold) of every decode-layer
   * kernel, or null for the driver's choice. An SM's L1/shared split is one setting for all its blocks:
   * blocks of kernels whose chosen splits differ cannot share an SM, which would undo the overlap that
   * programmatic dependent launch buys, e.g. for the shared-memory out-projection (MPT_SMEM_W) between
   * the attention and the up GEMM. 50% (rounded up by the driver to a split the SM has) measured on
   * the H100 (2026-11-28): with the shared-memory out-projection 837 / 11,299 tokens/s (batch 1 / 16)
   * against 677 / 11,118 at the driver's choice; through registers 842 / 11,202 against 843 / 11,211
   * (a tie); 100% (28 KB of L1) lost everywhere (735 / 9,463). MPT_CUDA_CARVEOUT=n sets it, =driver
   * leaves it to the driver.
   */
  layerCarveout: number | null = carveoutFromEnv(process.env.MPT_CUDA_CARVEOUT);

  /**
   * Whether few-row GEMMs that fit take skinny_gemm.cu's MPT_SMEM_W variant (smemWeightsPlan), from
   * smemWeightsMinRows rows on (MPT_CUDA_SMEM_W=0 off, =1 from one row). Measured on the H100
   * (2026-11-28, bench/RESULTS-cuda.md): only together with the uniform layerCarveout (without it
   * 677 against 843 tokens/s at batch 1), and then a win at batch 16 (11,299 against 11,202 through
   * registers at the same carveout) but not at batch 1 (837 against 842): so two row tiles only.
   */
  smemWeights = process.env.MPT_CUDA_SMEM_W !== '0';
  /**
   * Bytes of the MLP-up weights that a decode step's out-projection GEMM prefetches into L2 before its
   * wait, i.e. while the decode attention runs and the bus would idle (the out-projection's blocks have
   * their own weights in flight already), at one row tile (up to 8 rows); from 9 rows the decoder
   * prefetches half of it (decoder.ts upPrefetchBytesFor). MPT_CUDA_L2_PREFETCH_UP=MB sets it, 0 turns it off. Measured
   * on the H100 (2026-11-28, bench/RESULTS-cuda.md), this default: 865 against 841 tokens/s without the
   * prefetch at batch 1, 11,579 against 11,450 at batch 16 (same process); 4 MB 851 / 11,630, 12 MB
   * 863 / 11,492; in another call 16 MB 857 / 11,400, 24 MB 841 / 11,235.
   */
  l2PrefetchUpBytes = mbFromEnv('MPT_CUDA_L2_PREFETCH_UP', 8);
  smemWeightsMinRows = process.env.MPT_CUDA_SMEM_W === '1' ? 1 : 9;
  /** Warps a block of the MPT_SMEM_W variant instead of smemWeightsPlan's choice (benchmarks). */
  smemWeightsWarps: number | null = null;

  /**
   * Whether layerNormMatmulInto fuses the LayerNorm into few-row GEMMs when row statistics are given
   * (each warp normalizes its own K slice in the GEMM's prologue, skinny_gemm.cu), and up to how many
   * rows. On by default (MPT_CUDA_FUSE_LN=0 turns it off): measured on the H100 (2026-11-27, batch 1)
   * 839 against 827 tokens/s with a LayerNorm kernel of its own — one kernel boundary fewer before
   * the QKV, up and logits GEMMs. Only one row by default: that is what was measured, and the prologue
   * takes an L2 round trip a row, one after the other, so several rows may well lose to the kernel.
   * (An earlier prologue in which every block normalized all of K behind two barriers was 2% slower.)
   */
  fuseLayerNorm = process.env.MPT_CUDA_FUSE_LN !== '0';
  /** Up to how many rows (at most 8: one row tile) the prologue above fuses. */
  fuseLayerNormRows = 1;
  /**
   * Whether layerNormMatmulInto, when it does not fuse, normalizes from the given row statistics
   * (layernorm_stats8: no reduction over the row, no barrier) instead of the plain LayerNorm kernel;
   * MPT_CUDA_LN_STATS=0 turns it off (comparisons).
   */
  layerNormFromStats = process.env.MPT_CUDA_LN_STATS !== '0';

  private geluInPlace(y: CudaTensor, n: number): void {
    if (y.dtype === 'bfloat16' && n % 8 === 0 && y.ptr % 16 === 0) {
      this.launch1d('elementwise.cu', 'gelu_bf16x8', n / 8, [y.ptr, y.ptr, n / 8], { MPT_BF16: true });
    } else {
      this.launch1d('elementwise.cu', 'gelu', n, [y.ptr, y.ptr, n], { MPT_BF16: y.dtype === 'bfloat16' });
    }
  }

  /**
   * Whether prefill attention runs the wgmma flash kernel (sm_90a, heads of 64 and 128; flash.ts falls
   * back to the mma.sync kernel elsewhere) or always the mma.sync one (MPT_CUDA_PREFILL_WGMMA=0; comparisons).
   */
  prefillWgmma = process.env.MPT_CUDA_PREFILL_WGMMA !== '0';

  /** A fixed skinny GEMM shape instead of skinnyPlan's choice (benchmarks compare variants). */
  skinnyShape: { warps: number; unroll: number } | null = null;

  /**
   * Whether few-row GEMMs (≤ 8 rows) with no more output tiles than SMs run 16 warps a block instead of
   * 8 (skinnyPlan's `wide`); MPT_CUDA_WIDE_SKINNY=0 turns it off (comparisons).
   */
  wideSkinny = process.env.MPT_CUDA_WIDE_SKINNY !== '0';

  /**
   * Whether one-row-tile GEMMs of 384 or more output tiles take 4 warps a block (only the 1B model's
   * QKV GEMM changes: up and logits had 4 already) instead of 8: its 384 blocks all resident at once
   * (4 an SM at 128 registers a thread) rather than in 2 waves; measured alone
   * 9.5 against 10.2 µs (H100, bench GEMM table). MPT_CUDA_QKV_WARPS=8 turns it off (comparisons).
   */
  qkvFourWarps = process.env.MPT_CUDA_QKV_WARPS !== '8';

  /** Whether few-row GEMMs use skinny_gemm.cu (true) or always cuBLASLt (for comparisons). */
  skinny = process.env.MPT_CUDA_SKINNY !== '0';

  gelu(x: Tensor): Tensor {
    const xx = this.act(x, 'gelu'), n = elementCount(xx.shape);
    const out = this.alloc(xx.shape);
    const vectors = xx.dtype === 'bfloat16' && n % 8 === 0 && xx.ptr % 16 === 0;
    if (vectors && this.geluTable) {
      this.geluValues ??= buildGeluTable(this, 'elementwise.cu', 'gelu_table_build', 'bfloat16');
      launchGeluTable(this, 'elementwise.cu', 'gelu_table8', [xx.ptr, out.ptr], n / 8, this.geluValues);
    } else if (vectors) this.launch1d('elementwise.cu', 'gelu_bf16x8', n / 8, [xx.ptr, out.ptr, n / 8]);
    else this.launch1d('elementwise.cu', 'gelu', n, [xx.ptr, out.ptr, n]);
    return out;
  }

  /**
   * Whether bf16 gelu takes gelu_table8 (GELU from a table of the bf16 inputs, built once by the same
   * formula: bit-identical to gelu_bf16x8, kernels/gelu_table.cuh) instead of gelu_bf16x8, which spends
   * most of its issue slots on erff; MPT_CUDA_GELU_TABLE=0 keeps gelu_bf16x8 (comparisons). Measured on
   * the H100 (2026-11-28, bench/RESULTS-cuda-train.md), bf16 [16384, 8192]: 0.1927 against 0.1988 ms right
   * after a kernel wrote x (2.79 against 2.70 TB/s), 0.2109 against 0.2215 back to back; in the training
   * step 24 calls 4.58 against 4.76 ms. Both are bound by the memory, not by erff, at that shape.
   * The same switch and launch shape serve the training ops' geluBackward (gelu_backward_table8 against
   * gelu_backward8: 0.2826 against 0.2895 ms right after a kernel wrote dy, 0.2967 against 0.2933 back to
   * back, 6.79 against 7.18 ms in the step).
   */
  geluTable = process.env.MPT_CUDA_GELU_TABLE !== '0';
  geluTableShape: GeluTableShape = { ...GELU_TABLE_SHAPE };
  private geluValues: CudaTensor | null = null;

  clamp(x: Tensor, limit: number): Tensor {
    const xx = this.act(x, 'clamp'), n = elementCount(xx.shape);
    const out = this.alloc(xx.shape);
    this.launch1d('elementwise.cu', 'clamp', n, [xx.ptr, out.ptr, limit, n]);
    return out;
  }

  scale(x: Tensor, factor: number): Tensor {
    const xx = this.act(x, 'scale'), n = elementCount(xx.shape);
    const out = this.alloc(xx.shape);
    this.launch1d('elementwise.cu', 'scale', n, [xx.ptr, out.ptr, factor, n]);
    return out;
  }

  columns(x: Tensor, start: number, count: number): Tensor {
    const xx = this.act(x, 'columns'), w = width(xx), rows = rowCount(xx);
    if (start < 0 || count < 0 || start + count > w) throw new Error(`columns: [${start}, ${start + count}) outside width ${w}`);
    const out = this.alloc([...xx.shape.slice(0, -1), count]);
    this.launch1d('elementwise.cu', 'columns', rows * count, [xx.ptr, out.ptr, rows, w, start, count]);
    return out;
  }

  rows(x: Tensor, indices: readonly number[]): Tensor {
    const xx = asCuda(x, 'rows'), w = width(xx), n = rowCount(xx);
    for (const i of indices) if (!Number.isInteger(i) || i < 0 || i >= n) throw new Error(`rows: index ${i} outside [0, ${n})`);
    const idx = this.upload(Int32Array.from(indices), [indices.length], 'int32') as CudaTensor;
    const out = this.alloc([indices.length, w], xx.dtype);
    const defs = { MPT_BF16: xx.dtype === 'bfloat16' };
    if (xx.dtype === 'int32') throw new Error('rows: int32 tensors are not supported');
    this.launch1d('elementwise.cu', 'gather_rows', indices.length * w, [xx.ptr, idx.ptr, out.ptr, indices.length, w, n, this.errorFlag], defs);
    this.ctx.synchronize();
    this.release(idx);
    return out;
  }

  writeRows(dst: Tensor, src: Tensor, at: number): void {
    const d = this.act(dst, 'writeRows destination'), s = this.act(src, 'writeRows source');
    const [batch, capacity, w] = d.shape, t = s.shape[1];
    if (d.shape.length !== 3 || s.shape.length !== 3 || s.shape[0] !== batch || s.shape[2] !== w) {
      throw new Error(`writeRows: destination [${d.shape}] and source [${s.shape}] do not fit`);
    }
    if (at < 0 || at + t > capacity) throw new Error(`writeRows: rows [${at}, ${at + t}) outside capacity ${capacity}`);
    this.launch1d('elementwise.cu', 'write_rows', batch * t * w, [d.ptr, s.ptr, batch, t, w, capacity, 0, at]);
  }

  /** The ALiBi slopes on the device, uploaded once per array. */
  slopesOnDevice(slopes: Float32Array): CudaTensor {
    let t = this.slopeCache.get(slopes);
    if (!t) {
      const scopes = this.scopes.splice(0); // kept for the life of the backend, outside any scope
      t = this.upload(slopes, [slopes.length], 'float32') as CudaTensor;
      this.scopes.push(...scopes);
      this.slopeCache.set(slopes, t);
    }
    return t;
  }

  attention(args: AttentionArgs): Tensor {
    const q = this.act(args.q, 'attention q'), k = this.act(args.k, 'attention k'), v = this.act(args.v, 'attention v');
    const [batch, tq, dq] = q.shape, capacity = k.shape[1];
    const dHead = dq / args.nHeads;
    if (!Number.isInteger(dHead)) throw new Error(`attention: width ${dq} is not a multiple of ${args.nHeads} heads`);
    if (k.shape[2] !== dq || v.shape[2] !== dq || k.shape[0] !== batch) throw new Error(`attention: q [${q.shape}], k [${k.shape}] do not fit`);
    if (args.kvLen < tq || args.kvLen > capacity) throw new Error(`attention: kvLen ${args.kvLen} with ${tq} queries and capacity ${capacity}`);
    const mask = args.keyMask ? this.int(args.keyMask, 'attention keyMask') : null;
    const slopes = args.alibiSlopes ? this.slopesOnDevice(args.alibiSlopes) : null;
    const out = this.alloc([batch, tq, dq]);
    this.attentionInto({ q, k, v, out, mask, slopes, batch, tq, capacity, kvLen: args.kvLen, kvLenDev: 0,
      nHeads: args.nHeads, dHead, qStride: dq, kvStride: dq, oStride: dq, scale: args.scale });
    return out;
  }

  /** Flash attention (tensor cores) for prefill in bf16; the split decode kernel otherwise. */
  attentionInto(a: {
    q: CudaTensor; k: CudaTensor; v: CudaTensor; out: CudaTensor; mask: CudaTensor | null; slopes: CudaTensor | null;
    batch: number; tq: number; capacity: number; kvLen: number; kvLenDev: number; nHeads: number; dHead: number;
    qStride: number; kvStride: number; oStride: number; scale: number; splits?: number; forceDecode?: boolean;
  }): void {
    const flash = !a.forceDecode && this.activationDType === 'bfloat16' && a.dHead % 16 === 0 && a.dHead <= 256 && a.tq >= 16
      && a.kvLenDev === 0 && a.qStride % 8 === 0 && a.kvStride % 8 === 0 && a.oStride % 2 === 0;
    if (flash) {
      launchFlashForward(this.kernels, {
        q: a.q.ptr, k: a.k.ptr, v: a.v.ptr, mask: a.mask?.ptr ?? 0, slopes: a.slopes?.ptr ?? 0, out: a.out.ptr, lse: 0,
        batch: a.batch, nHeads: a.nHeads, dHead: a.dHead, tq: a.tq, capacity: a.capacity, kvLen: a.kvLen,
        qStride: a.qStride, kvStride: a.kvStride, oStride: a.oStride, scale: a.scale,
      }, this.prefillWgmma ? flashPrefillShape(a.dHead) : flashPrefillShape(a.dHead).fallback);
      return;
    }
    const blocks = a.batch * a.tq * a.nHeads;
    const splits = a.splits ?? Math.max(1, Math.min(32, Math.ceil(2 * this.ctx.device.multiprocessors / blocks), Math.ceil(a.kvLen / 128)));
    const partialPtr = splits > 1 ? this.partialBuffer(blocks * splits * (2 + a.dHead)).ptr : 0;
    const defs = this.defs({ HEAD_DIM: a.dHead });
    this.kernels.get('attention.cu', 'attention_decode', defs).launch([splits, a.nHeads, a.batch * a.tq], [128],
      [a.q.ptr, a.k.ptr, a.v.ptr, a.mask?.ptr ?? 0, a.slopes?.ptr ?? 0, a.out.ptr, partialPtr, a.tq, a.nHeads, a.capacity,
        a.kvLenDev, a.kvLen, a.qStride, a.kvStride, a.oStride, a.scale]);
    if (splits > 1) {
      this.kernels.get('attention.cu', 'attention_combine', defs).launch([a.nHeads, a.batch * a.tq], [Math.ceil(a.dHead / 32) * 32],
        [partialPtr, a.out.ptr, a.tq, a.nHeads, splits, a.oStride]);
    }
  }

  /**
   * A decode step's attention with the QKV split folded in (decode_attention.cu): `qkv` [batch, 3d] from
   * a skinny GEMM that clamped it and wrote its row statistics `stats` ([batch, 3d/16, 2]); q and k get
   * their QK LayerNorm (qLn/kLn, or none) from those, the new k and v go into the caches at position
   * *posDev, and the heads attend over keys 0..*posDev into `out` [batch, d]. With splits > 1 the keys
   * are shared among that many blocks a head, which merge through `partial` (float32, ≥ batch·heads·
   * splits·(2 + dHead)) and `counters` (int32 [batch·heads], zero, left zero) inside the same kernel.
   * `perSplit` > 0: only ceil((*posDev + 1) / perSplit) of the splits work (chosen on the device each
   * step, so a graph replays it as the context grows); 0 or absent: all of them.
   */
  decodeAttentionQkvInto(a: {
    qkv: CudaTensor; stats: CudaTensor; qLn: { w: CudaTensor; b: CudaTensor | null } | null; kLn: { w: CudaTensor; b: CudaTensor | null } | null;
    kCache: CudaTensor; vCache: CudaTensor; mask: CudaTensor | null; slopes: CudaTensor | null; out: CudaTensor;
    batch: number; capacity: number; posDev: number; nHeads: number; dHead: number; eps: number; scale: number;
    splits: number; partial: CudaTensor | null; counters: CudaTensor | null; perSplit?: number;
    /** Keys a warp loads before using any (ATT_U: 8 by default; 4 halves the registers). */
    keysInFlight?: number;
  }): void {
    const d = a.nHeads * a.dHead;
    if (d % 16 !== 0) throw new Error(`decodeAttentionQkvInto: width ${d} is not a multiple of 16`);
    if (!a.qLn !== !a.kLn) throw new Error('decodeAttentionQkvInto: QK LayerNorm needs both q and k weights');
    const splits = Math.max(1, a.splits);
    if (splits > 1 && (!a.partial || !a.counters || elementCount(a.partial.shape) < a.batch * a.nHeads * splits * (2 + a.dHead)
      || elementCount(a.counters.shape) < a.batch * a.nHeads)) {
      throw new Error(`decodeAttentionQkvInto: ${splits} splits need partial and counters buffers of their size`);
    }
    this.layerKernel('decode_attention.cu', 'attention_decode_qkv', this.defs({ HEAD_DIM: a.dHead, ...(a.keysInFlight ? { ATT_U: a.keysInFlight } : {}) })).launch([splits, a.nHeads, a.batch], [256], [
      a.qkv.ptr, a.stats.ptr, a.qLn?.w.ptr ?? 0, a.qLn?.b?.ptr ?? 0, a.kLn?.w.ptr ?? 0, a.kLn?.b?.ptr ?? 0,
      a.kCache.ptr, a.vCache.ptr, a.mask?.ptr ?? 0, a.slopes?.ptr ?? 0, a.out.ptr, splits > 1 ? a.partial!.ptr : 0, splits > 1 ? a.counters!.ptr : 0,
      d, a.nHeads, a.capacity, a.posDev, a.qLn ? 1 : 0, a.eps, a.scale, Math.max(0, a.perSplit ?? 0)]);
  }

  /**
   * Keys a split of the folded decode attention takes before another split joins (its perSplit); null:
   * foldPerSplitFor's choice (128 = two passes of its 8 warps × 8 keys, so a context of up to 128
   * positions runs as one block a head with no merge). MPT_CUDA_FOLD_KEYS sets it; 0 spreads the keys
   * over a grid sized from the batch and the SMs, as before (comparisons).
   */
  foldKeysPerSplit: number | null = process.env.MPT_CUDA_FOLD_KEYS !== undefined ? Number(process.env.MPT_CUDA_FOLD_KEYS) : null;

  /** perSplit for a decode step of `blocks` = batch·heads (foldKeysPerSplit when set): 128 while the heads
   * leave SMs idle (batch 1: 16 blocks), 256 once they fill the chip (batch 16: 256 blocks), where a merge
   * costs more than the second pass it saves (H100: 10,869 against 10,690 tokens/s; batch 1 within noise). */
  foldPerSplitFor(blocks: number): number {
    return this.foldKeysPerSplit ?? (blocks >= this.device.multiprocessors ? 256 : 128);
  }

  /**
   * Keys a warp of the folded decode attention has in flight (ATT_U) for `blocks` = batch·heads: 4 once
   * the heads fill the chip (batch 16: 70 instead of 128 registers, more resident blocks; H100 +1–1.3%
   * in three runs, the last 11,136 against 10,993 tokens/s), 16 below: at batch 1 a warp's keys of a
   * short context are then all loaded before the wait, one pass instead of two (H100, 2026-11-28, same
   * process: 881 against 866 tokens/s with 8; bench/RESULTS-cuda.md).
   * foldKeysInFlight (MPT_CUDA_ATT_U = 4, 8 or 16) sets it for every batch.
   */
  foldKeysInFlightFor(blocks: number): number {
    return this.foldKeysInFlight ?? (blocks >= this.device.multiprocessors ? 4 : 16);
  }
  foldKeysInFlight: number | null = ['4', '8', '16'].includes(process.env.MPT_CUDA_ATT_U ?? '') ? Number(process.env.MPT_CUDA_ATT_U) : null;

  /** Whether decoders keep one step ahead in step() (decoder.ts); MPT_CUDA_PIPELINE=0 turns it off (comparisons). */
  pipelineDecode = process.env.MPT_CUDA_PIPELINE !== '0';

  /**
   * Whether the decoder's bf16 decode step folds the QKV split into its attention kernel
   * (decodeAttentionQkvInto); MPT_CUDA_FOLD_SPLIT=0 keeps qkv.cu's kernel (comparisons).
   */
  foldQkvSplit = process.env.MPT_CUDA_FOLD_SPLIT !== '0';

  /** The float32 scratch of split attention, grown to `n` values when needed (outside every scope). */
  private partialBuffer(n: number): CudaTensor {
    if (!this.partial || elementCount(this.partial.shape) < n) {
      if (this.partial) this.release(this.partial);
      const scopes = this.scopes.splice(0);
      this.partial = this.alloc([n], 'float32');
      this.scopes.push(...scopes);
    }
    return this.partial;
  }

  // ---- training ops (training.ts) -------------------------------------------------------------
  private trainingOps: CudaTrainingOps | null = null;
  /** The training ops, made at first use (a cuBLASLt handle and workspace of their own). */
  get training(): CudaTrainingOps { return this.trainingOps ??= new CudaTrainingOps(this); }
  attentionForTraining(args: AttentionArgs) { return this.training.attentionForTraining(args); }
  attentionBackward(args: AttentionArgs, out: Tensor, logSumExp: Tensor, dOut: Tensor) { return this.training.attentionBackward(args, out, logSumExp, dOut); }
  linearBackwardInto(a: Parameters<CudaTrainingOps['linearBackwardInto']>[0]) { return this.training.linearBackwardInto(a); }
  layerNormBackwardInto(a: Parameters<CudaTrainingOps['layerNormBackwardInto']>[0]) { return this.training.layerNormBackwardInto(a); }
  linearResidual(x: Tensor, weight: Tensor, bias: Tensor | null, residual: Tensor) { return this.training.linearResidual(x, weight, bias, residual); }
  rowBlock(t: Tensor, start: number, count: number) { return this.training.rowBlock(t, start, count); }
  geluBackward(dy: Tensor, x: Tensor) { return this.training.geluBackward(dy, x); }
  clampBackward(dy: Tensor, x: Tensor, limit: number) { return this.training.clampBackward(dy, x, limit); }
  embeddingBackwardInto(dst: Tensor, ids: Tensor, dy: Tensor, factor: number) { this.training.embeddingBackwardInto(dst, ids, dy, factor); }
  crossEntropyWithOutput(args: Parameters<CudaTrainingOps['crossEntropyWithOutput']>[0]) { return this.training.crossEntropyWithOutput(args); }
  addInto(dst: Tensor, src: Tensor, factor: number) { this.training.addInto(dst, src, factor); }
  scaleInPlace(dst: Tensor, factor: number) { this.training.scaleInPlace(dst, factor); }
  sumOfSquares(x: Tensor) { return this.training.sumOfSquares(x); }
  sumOfSquaresAll(xs: readonly Tensor[]) { return this.training.sumOfSquaresAll(xs); }
  adamwStep(args: Parameters<CudaTrainingOps['adamwStep']>[0]) { this.training.adamwStep(args); }
  adamwStepAll(args: Parameters<CudaTrainingOps['adamwStepAll']>[0]) { this.training.adamwStepAll(args); }

  /** A tensor outside every scope, kept until released by hand (buffers that live with the backend). */
  persistent(shape: readonly number[], dtype: DType = this.activationDType): CudaTensor {
    const scopes = this.scopes.splice(0);
    try { return this.alloc(shape, dtype); } finally { this.scopes.push(...scopes); }
  }

  // ---- beyond the Backend interface ----------------------------------------------------------

  /** Next token of each row of logits [rows, vocab]: argmax when temperature ≤ 0, else sampled. */
  sampleInto(logits: CudaTensor, out: CudaTensor, opts: { temperature: number; topK?: number; topP?: number; seed?: number; stepDev?: number; step?: number }): void {
    const vocab = width(logits), rows = rowCount(logits);
    const defs = { MPT_BF16: logits.dtype === 'bfloat16' };
    if (opts.temperature <= 0) {
      this.kernels.get('sampling.cu', 'argmax_rows', defs).launch([rows], [1024], [logits.ptr, out.ptr, vocab, vocab]);
    } else {
      this.kernels.get('sampling.cu', 'sample_rows', defs).launch([rows], [1024], [logits.ptr, out.ptr, vocab, vocab,
        opts.temperature, opts.topK ?? 0, opts.topP ?? 1, opts.seed ?? 0, opts.stepDev ?? 0, opts.step ?? 0]);
    }
  }

  sample(logits: Tensor, opts: { temperature: number; topK?: number; topP?: number; seed?: number; step?: number }): Int32Array {
    const l = asCuda(logits, 'sample');
    const out = this.alloc([rowCount(l)], 'int32');
    this.sampleInto(l, out, opts);
    const ids = this.download(out) as Int32Array;
    this.release(out);
    return ids;
  }

  /**
   * The fused, graph-captured inference path for a whole model (decoder.ts): preallocated KV cache
   * for `batch` rows of `capacity` positions. `slopes` is alibiSlopes(config) or null.
   */
  createDecoder(config: MptConfig, params: DecoderParams, slopes: Float32Array | null, batch: number, capacity: number,
    options: DecoderOptions = {}): CudaDecoder {
    return new CudaDecoder(this, config, params, slopes, batch, capacity, options);
  }

  /** A tensor of mean + std·N(0, 1) values made on the device (random weights for benchmarks). */
  randomNormal(shape: readonly number[], seed: number, mean: number, std: number): CudaTensor {
    const t = this.alloc(shape), n = elementCount(shape);
    this.launch1d('elementwise.cu', 'fill_normal', n, [t.ptr, n, seed, mean, std]);
    return t;
  }

  captureGraph(fn: () => void): CudaGraph {
    return CudaGraph.capture(this.ctx, fn);
  }

  memoryStats() {
    return { ...this.allocator.stats(), device: this.ctx.memoryInfo() };
  }
}
