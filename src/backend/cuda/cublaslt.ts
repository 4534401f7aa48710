/**
 * cuBLASLt: y = x · Wᵀ (+ bias) (+ y when accumulating) for row-major x [rows, in], W [out, in],
 * y [rows, out]; bf16 operands with fp32 accumulation, or plain fp32 (no TF32) for checking.
 * Accumulating into y (beta = 1, C = D) is the epilogue that saves the residual add's pass; with
 * `residual` the GEMM reads it as C and writes the sum to y (no copy of the residual into y first).
 * Descriptors are made once per shape and kept; the algorithm is the fastest of the heuristic's
 * candidates for big GEMMs (LtHandle.choose), timed on the first call (an accumulating one into scratch).
 *
 * Column-major view: y [rows,out] row-major is yᵀ [out, rows]; yᵀ = W · xᵀ, with W read as the
 * transpose of its column-major [in, out] storage ("TN" GEMM: m = out, n = rows, k = in).
 */
import type { CudaContext } from './driver.js';
import {
  CublasError, CUDA_R_16BF, CUDA_R_32F, create, DESC_BIAS_POINTER, DESC_EPILOGUE, EPILOGUE_BIAS, EPILOGUE_DEFAULT, int32,
  LtHandle, matmulDesc, setAttribute,
} from './cublaslt-api.js';

export { CublasError } from './cublaslt-api.js';

export interface MatmulArgs {
  rows: number;
  inFeatures: number;
  outFeatures: number;
  x: number;
  w: number;
  y: number;
  bias: number | null;
  /** y += x · Wᵀ instead of y = x · Wᵀ. */
  accumulate: boolean;
  /** y = residual + x · Wᵀ (+ bias): residual [rows, out] of y's type, read as C (accumulate must be false). */
  residual?: number | null;
  dtype: 'bfloat16' | 'float32';
  /** y's type: float32 with bf16 operands gives fp32 logits and a fp32 residual stream. */
  outDType?: 'bfloat16' | 'float32';
}

interface Plan {
  key: string;
  desc: number;
  a: number;
  b: number;
  c: number;
  algo: Buffer | null;
  biasSlot: Buffer | null;
  lastBias: number;
}

export class CublasLt {
  private readonly lt: LtHandle;
  private readonly plans = new Map<string, Plan>();
  private readonly one = new Float32Array([1]);
  private readonly zero = new Float32Array([0]);

  constructor(ctx: CudaContext, workspaceBytes = 32 << 20) {
    this.lt = new LtHandle(ctx, workspaceBytes);
  }

  private plan(a: MatmulArgs): Plan {
    const outType = (a.outDType ?? a.dtype) === 'bfloat16' ? CUDA_R_16BF : CUDA_R_32F;
    const addsC = a.accumulate || !!a.residual;
    const key = `linear:${a.dtype}>${a.outDType ?? a.dtype}:${a.rows}:${a.inFeatures}:${a.outFeatures}:${a.bias !== null}:${addsC}`;
    let plan = this.plans.get(key);
    if (plan) return plan;
    const type = a.dtype === 'bfloat16' ? CUDA_R_16BF : CUDA_R_32F;
    const desc = matmulDesc(true, false);
    setAttribute(desc, DESC_EPILOGUE, int32(a.bias !== null ? EPILOGUE_BIAS : EPILOGUE_DEFAULT), 'EPILOGUE');
    let biasSlot: Buffer | null = null;
    if (a.bias !== null) {
      biasSlot = Buffer.alloc(8);
      biasSlot.writeBigUInt64LE(BigInt(a.bias));
      setAttribute(desc, DESC_BIAS_POINTER, biasSlot, 'BIAS_POINTER');
    }
    const layoutA = create('cublasLtMatrixLayoutCreate', type, a.inFeatures, a.outFeatures, a.inFeatures);
    const layoutB = create('cublasLtMatrixLayoutCreate', type, a.inFeatures, a.rows, a.inFeatures);
    const layoutC = create('cublasLtMatrixLayoutCreate', outType, a.outFeatures, a.rows, a.outFeatures);
    plan = { key, desc, a: layoutA, b: layoutB, c: layoutC, algo: null, biasSlot, lastBias: a.bias ?? 0 };
    this.plans.set(key, plan);
    return plan;
  }

  matmul(a: MatmulArgs): void {
    const plan = this.plan(a);
    if (a.bias !== null && (a.outDType ?? a.dtype) !== a.dtype) throw new CublasError('cublasLtMatmul', 15, 'a bias with an output type other than the operands\' is not supported');
    if (a.bias !== null && plan.lastBias !== a.bias) {
      plan.biasSlot!.writeBigUInt64LE(BigInt(a.bias));
      setAttribute(plan.desc, DESC_BIAS_POINTER, plan.biasSlot!, 'BIAS_POINTER');
      plan.lastBias = a.bias;
    }
    if (a.residual && a.accumulate) throw new CublasError('cublasLtMatmul', 7, 'accumulate and residual together');
    const what = `${a.rows}x${a.inFeatures} · ${a.outFeatures}x${a.inFeatures}ᵀ, ${a.dtype}${a.accumulate ? ', accumulating' : a.residual ? ', + residual' : ''}`;
    const beta = a.accumulate || a.residual ? this.one : this.zero, c = a.residual || a.y;
    const launch = (algo: Buffer, d = a.y) => this.lt.matmul(what, plan.desc, algo, this.one, a.w, plan.a, a.x, plan.b, beta, c, plan.c, d);
    // Trials of an accumulating GEMM (C = y) write scratch, so y is added into once.
    const outBytes = a.rows * a.outFeatures * ((a.outDType ?? a.dtype) === 'bfloat16' ? 2 : 4);
    plan.algo ??= this.lt.choose(plan.key, 2 * a.rows * a.inFeatures * a.outFeatures, plan.desc, plan.a, plan.b, plan.c, what, launch,
      a.accumulate ? outBytes : 0);
    launch(plan.algo);
  }
}
