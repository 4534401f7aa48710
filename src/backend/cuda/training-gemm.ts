/**
 * General GEMMs for the backward pass through cuBLASLt, in row-major terms:
 *   C [m, n] = alpha · op(A) · op(B) + beta · C,   op(X) = X or Xᵀ
 * with A stored [m, k] (or [k, m] when transposed) and B stored [k, n] (or [n, k]). The forward's
 * CublasLt (cublaslt.ts) only does y = x·Wᵀ; backward needs dx = dy·W (NN) and dW = dyᵀ·x (TN), and the
 * fused cross entropy needs float32 logits blocks and a float32 dTable accumulated over blocks.
 *
 * Row-major X [r, c] is column-major Xᵀ with leading dimension c, so C = op(A)·op(B) is computed as the
 * column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: cuBLAS's first operand is B, its second A, m and n swap.
 * Descriptors are made once per shape and kept; the algorithm is the fastest of the heuristic's
 * candidates for big GEMMs (LtHandle.choose), timed on the first call: an accumulating GEMM (beta ≠ 0)
 * is timed reading the real C and writing scratch, so the gradient is added into once.
 */
import type { CudaContext } from './driver.js';
import { create, CUDA_R_16BF, CUDA_R_32F, LtHandle, matmulDesc, setLayoutBatch } from './cublaslt-api.js';

export type GemmType = 'bfloat16' | 'float32';
export interface GemmArgs {
  m: number; n: number; k: number;
  a: number; aTrans: boolean;
  b: number; bTrans: boolean;
  c: number;
  alpha: number; beta: number;
  /** The type of A and B, and of C. */
  inType: GemmType; outType: GemmType;
  /**
   * A strided batch: `count` GEMMs in one launch, the i-th on A + i·strideA, B + i·strideB, C + i·strideC
   * (strides in elements; 0: the same matrix for all, e.g. a shared input). More tiles a launch than
   * one GEMM of the batch, so a small output (2048 × 2048: about one wave on 132 SMs) loses less to its
   * last wave.
   */
  batch?: { count: number; strideA: number; strideB: number; strideC: number } | null;
}

interface Plan { key: string; desc: number; la: number; lb: number; lc: number; algo: Buffer | null }

export class TrainingGemm {
  private readonly lt: LtHandle;
  private readonly plans = new Map<string, Plan>();
  private readonly alpha = new Float32Array(1);
  private readonly beta = new Float32Array(1);

  constructor(ctx: CudaContext, workspaceBytes = 32 << 20) {
    this.lt = new LtHandle(ctx, workspaceBytes, 'training');
  }

  private plan(g: GemmArgs, b: GemmArgs['batch']): Plan {
    const key = `gemm:${g.m}:${g.n}:${g.k}:${g.aTrans}:${g.bTrans}:${g.inType}>${g.outType}:${g.beta !== 0 ? 'acc' : ''}${b ? `:batch${b.count}/${b.strideA}/${b.strideB}/${b.strideC}` : ''}`;
    let plan = this.plans.get(key);
    if (plan) return plan;
    const tin = g.inType === 'bfloat16' ? CUDA_R_16BF : CUDA_R_32F, tout = g.outType === 'bfloat16' ? CUDA_R_16BF : CUDA_R_32F;
    // cuBLAS's first operand is our B: stored [k, n] (column-major [n, k], no transpose) or [n, k] (transposed).
    const desc = matmulDesc(g.bTrans, g.aTrans);
    const la = g.bTrans ? create('cublasLtMatrixLayoutCreate', tin, g.k, g.n, g.k) : create('cublasLtMatrixLayoutCreate', tin, g.n, g.k, g.n);
    const lb = g.aTrans ? create('cublasLtMatrixLayoutCreate', tin, g.m, g.k, g.m) : create('cublasLtMatrixLayoutCreate', tin, g.k, g.m, g.k);
    const lc = create('cublasLtMatrixLayoutCreate', tout, g.n, g.m, g.n);
    if (b) { // cuBLAS's A is our B and its B our A
      setLayoutBatch(la, b.count, b.strideB);
      setLayoutBatch(lb, b.count, b.strideA);
      setLayoutBatch(lc, b.count, b.strideC);
    }
    plan = { key, desc, la, lb, lc, algo: null };
    this.plans.set(key, plan);
    return plan;
  }

  gemm(g: GemmArgs): void {
    if (g.m === 0 || g.n === 0) return;
    const batch = g.batch && g.batch.count > 1 ? g.batch : null, count = batch?.count ?? 1;  // a batch of one is a plain GEMM
    const plan = this.plan(g, batch);
    this.alpha[0] = g.alpha;
    this.beta[0] = g.beta;
    const what = `${count > 1 ? `${count} × ` : ''}${g.m}x${g.n}x${g.k}, ${g.aTrans ? 'T' : 'N'}${g.bTrans ? 'T' : 'N'}, ${g.inType}>${g.outType}${g.beta !== 0 ? ', accumulating' : ''}`;
    const launch = (algo: Buffer, d = g.c) => this.lt.matmul(what, plan.desc, algo, this.alpha, g.b, plan.la, g.a, plan.lb, this.beta, g.c, plan.lc, d);
    // Trials of an accumulating GEMM read the real C and write scratch, so the gradient is added into once.
    // The scratch of an accumulating batch's trials spans every member's output (strideC apart).
    const outSpan = (batch ? (count - 1) * batch.strideC : 0) + g.m * g.n;
    plan.algo ??= this.lt.choose(plan.key, 2 * g.m * g.n * g.k * count, plan.desc, plan.la, plan.lb, plan.lc, what, launch,
      g.beta !== 0 ? outSpan * (g.outType === 'bfloat16' ? 2 : 4) : 0);
    launch(plan.algo);
  }
}
