/**
 * General GEMMs for the backward pass through cuBLASLt, in row-major terms:
 *   C [m, n] = alpha · op(A) · op(B) + beta · C,   op(X) = X or Xᵀ
 * with A stored [m, k] (or [k, m] when transposed) and B stored [k, n] (or [n, k]). The forward's
 * CublasLt (cublaslt.ts) only does y = x·Wᵀ; backward needs dx = dy·W (NN) and dW = dyᵀ·x (TN), and the
 * fused cross entropy needs float32 logits blocks and a float32 dTable accumulated over blocks.
 *
 * Row-major X [r, c] is column-major Xᵀ with leading dimension c, so C = op(A)·op(B) is computed as the
 * column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: cuBLAS's first operand is B, its second A, m and n swap.
 * Descriptors and the heuristic's algorithm are made once per shape and kept.
 */
import { loadLibrary } from './libraries.js';
import { CublasError } from './cublaslt.js';
import { cu, type CudaContext } from './driver.js';

type Fn = (...args: any[]) => any;
let fns: Record<string, Fn> | null = null;
function lt(): Record<string, Fn> {
  if (fns) return fns;
  const lib = loadLibrary('libcublasLt', ['libcublasLt.so', 'libcublasLt.so.13', 'libcublasLt.so.12']);
  fns = {};
  for (const proto of [
    'int cublasLtCreate(void *handle)',
    'int cublasLtMatmulDescCreate(void *desc, int computeType, int scaleType)',
    'int cublasLtMatmulDescSetAttribute(uint64_t desc, int attr, void *buf, size_t size)',
    'int cublasLtMatrixLayoutCreate(void *layout, int type, uint64_t rows, uint64_t cols, int64_t ld)',
    'int cublasLtMatmulPreferenceCreate(void *pref)',
    'int cublasLtMatmulPreferenceSetAttribute(uint64_t pref, int attr, void *buf, size_t size)',
    'int cublasLtMatmulAlgoGetHeuristic(uint64_t handle, uint64_t op, uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t pref, int count, void *results, _Out_ int *returned)',
    'int cublasLtMatmul(uint64_t handle, uint64_t op, void *alpha, uint64_t A, uint64_t Adesc, uint64_t B, uint64_t Bdesc, void *beta, uint64_t C, uint64_t Cdesc, uint64_t D, uint64_t Ddesc, void *algo, uint64_t workspace, size_t workspaceSize, uint64_t stream)',
  ]) {
    const f = lib.func(proto);
    fns[f.info.name] = f;
  }
  return fns;
}

function check(call: string, status: number): void {
  if (status !== 0) throw new CublasError(call, status, status === 15 ? 'CUBLAS_STATUS_NOT_SUPPORTED' : status === 7 ? 'CUBLAS_STATUS_INVALID_VALUE' : 'cuBLASLt error');
}
const handleOut = new BigUint64Array(1);
function create(call: string, ...args: unknown[]): number {
  handleOut[0] = 0n;
  check(call, lt()[call](handleOut, ...args));
  return Number(handleOut[0]);
}
const int32 = (v: number) => { const b = Buffer.alloc(4); b.writeInt32LE(v); return b; };

const CUDA_R_32F = 0, CUDA_R_16BF = 14, CUBLAS_COMPUTE_32F = 68;
const CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, DESC_TRANSA = 3, DESC_TRANSB = 4;
const PREF_MAX_WORKSPACE_BYTES = 1, HEURISTIC_RESULT_BYTES = 96;

export type GemmType = 'bfloat16' | 'float32';
export interface GemmArgs {
  m: number; n: number; k: number;
  a: number; aTrans: boolean;
  b: number; bTrans: boolean;
  c: number;
  alpha: number; beta: number;
  /** The type of A and B, and of C. */
  inType: GemmType; outType: GemmType;
}

interface Plan { desc: number; la: number; lb: number; lc: number; algo: Buffer }

export class TrainingGemm {
  private readonly handle: number;
  private readonly pref: number;
  private readonly workspace: number;
  private readonly plans = new Map<string, Plan>();
  private readonly alpha = new Float32Array(1);
  private readonly beta = new Float32Array(1);

  constructor(private readonly ctx: CudaContext, private readonly workspaceBytes = 32 << 20) {
    this.handle = create('cublasLtCreate');
    this.pref = create('cublasLtMatmulPreferenceCreate');
    const ws = Buffer.alloc(8);
    ws.writeBigUInt64LE(BigInt(workspaceBytes));
    check('cublasLtMatmulPreferenceSetAttribute', lt().cublasLtMatmulPreferenceSetAttribute(this.pref, PREF_MAX_WORKSPACE_BYTES, ws, 8));
    const p = new BigUint64Array(1);
    cu('cuMemAlloc_v2', p, workspaceBytes);
    this.workspace = Number(p[0]);
  }

  private plan(g: GemmArgs): Plan {
    const key = `${g.m}:${g.n}:${g.k}:${g.aTrans}:${g.bTrans}:${g.inType}>${g.outType}`;
    let plan = this.plans.get(key);
    if (plan) return plan;
    const tin = g.inType === 'bfloat16' ? CUDA_R_16BF : CUDA_R_32F, tout = g.outType === 'bfloat16' ? CUDA_R_16BF : CUDA_R_32F;
    const desc = create('cublasLtMatmulDescCreate', CUBLAS_COMPUTE_32F, CUDA_R_32F);
    // cuBLAS's first operand is our B: stored [k, n] (column-major [n, k], no transpose) or [n, k] (transposed).
    check('cublasLtMatmulDescSetAttribute(TRANSA)', lt().cublasLtMatmulDescSetAttribute(desc, DESC_TRANSA, int32(g.bTrans ? CUBLAS_OP_T : CUBLAS_OP_N), 4));
    check('cublasLtMatmulDescSetAttribute(TRANSB)', lt().cublasLtMatmulDescSetAttribute(desc, DESC_TRANSB, int32(g.aTrans ? CUBLAS_OP_T : CUBLAS_OP_N), 4));
    const la = g.bTrans ? create('cublasLtMatrixLayoutCreate', tin, g.k, g.n, g.k) : create('cublasLtMatrixLayoutCreate', tin, g.n, g.k, g.n);
    const lb = g.aTrans ? create('cublasLtMatrixLayoutCreate', tin, g.m, g.k, g.m) : create('cublasLtMatrixLayoutCreate', tin, g.k, g.m, g.k);
    const lc = create('cublasLtMatrixLayoutCreate', tout, g.n, g.m, g.n);
    const results = Buffer.alloc(HEURISTIC_RESULT_BYTES * 4);
    const returned = [0];
    check(`cublasLtMatmulAlgoGetHeuristic(${key})`, lt().cublasLtMatmulAlgoGetHeuristic(this.handle, desc, la, lb, lc, lc, this.pref, 4, results, returned));
    if (returned[0] < 1) throw new CublasError(`cublasLtMatmulAlgoGetHeuristic(${key})`, 15, 'no algorithm for this shape');
    plan = { desc, la, lb, lc, algo: Buffer.from(results.subarray(0, 64)) };
    this.plans.set(key, plan);
    return plan;
  }

  gemm(g: GemmArgs): void {
    if (g.m === 0 || g.n === 0) return;
    const plan = this.plan(g);
    this.alpha[0] = g.alpha;
    this.beta[0] = g.beta;
    check(`cublasLtMatmul(${g.m}x${g.n}x${g.k}, ${g.aTrans ? 'T' : 'N'}${g.bTrans ? 'T' : 'N'}, ${g.inType}>${g.outType})`,
      lt().cublasLtMatmul(this.handle, plan.desc, this.alpha, g.b, plan.la, g.a, plan.lb, this.beta, g.c, plan.lc, g.c, plan.lc,
        plan.algo, this.workspace, this.workspaceBytes, this.ctx.stream));
  }
}
