/**
 * cuBLASLt: y = x · Wᵀ (+ bias) (+ y when accumulating) for row-major x [rows, in], W [out, in],
 * y [rows, out]; bf16 operands with fp32 accumulation, or plain fp32 (no TF32) for checking.
 * Accumulating into y (beta = 1, C = D) is the epilogue that saves the residual add's pass.
 * Descriptors and the heuristic's algorithm are made once per shape and kept.
 *
 * Column-major view: y [rows,out] row-major is yᵀ [out, rows]; yᵀ = W · xᵀ, with W read as the
 * transpose of its column-major [in, out] storage ("TN" GEMM: m = out, n = rows, k = in).
 */
import { loadLibrary } from './libraries.js';
import { cu, type CudaContext } from './driver.js';

const STATUS: Record<number, string> = {
  0: 'CUBLAS_STATUS_SUCCESS', 1: 'CUBLAS_STATUS_NOT_INITIALIZED', 3: 'CUBLAS_STATUS_ALLOC_FAILED',
  7: 'CUBLAS_STATUS_INVALID_VALUE', 8: 'CUBLAS_STATUS_ARCH_MISMATCH', 11: 'CUBLAS_STATUS_MAPPING_ERROR',
  13: 'CUBLAS_STATUS_EXECUTION_FAILED', 14: 'CUBLAS_STATUS_INTERNAL_ERROR', 15: 'CUBLAS_STATUS_NOT_SUPPORTED',
  16: 'CUBLAS_STATUS_LICENSE_ERROR',
};

export class CublasError extends Error {
  constructor(readonly call: string, readonly status: number, meaning: string) {
    super(`${call} failed: ${meaning} (cublasStatus ${status})`);
    this.name = 'CublasError';
  }
}

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
  try {
    const f = lib.func('const char *cublasLtGetStatusString(int status)');
    fns.statusString = f;
  } catch {
    // older cuBLASLt: our own table
  }
  return fns;
}

function check(call: string, status: number): void {
  if (status === 0) return;
  let meaning = STATUS[status] ?? 'unknown status';
  try {
    const text = lt().statusString?.(status) as string | undefined;
    if (text && !meaning.includes(text)) meaning = `${meaning}: ${text}`;
  } catch { /* keep the table's name */ }
  throw new CublasError(call, status, meaning);
}

const out = new BigUint64Array(1);
function create(call: string, ...args: unknown[]): number {
  out[0] = 0n;
  check(call, lt()[call](out, ...args));
  return Number(out[0]);
}

// cublasLt enums (cublasLt.h, cublas_api.h, library_types.h)
const CUDA_R_32F = 0, CUDA_R_16BF = 14;
const CUBLAS_COMPUTE_32F = 68;
const CUBLAS_OP_N = 0, CUBLAS_OP_T = 1;
const DESC_TRANSA = 3, DESC_TRANSB = 4, DESC_EPILOGUE = 7, DESC_BIAS_POINTER = 8;
const EPILOGUE_DEFAULT = 1, EPILOGUE_BIAS = 4;
const PREF_MAX_WORKSPACE_BYTES = 1;
const HEURISTIC_RESULT_BYTES = 96; // sizeof(cublasLtMatmulHeuristicResult_t); the algo is its first 64 bytes

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
  dtype: 'bfloat16' | 'float32';
  /** y's type: float32 with bf16 operands gives fp32 logits and a fp32 residual stream. */
  outDType?: 'bfloat16' | 'float32';
}

interface Plan {
  desc: number;
  a: number;
  b: number;
  c: number;
  algo: Buffer;
  biasSlot: Buffer | null;
  lastBias: number;
}

const int32 = (v: number) => { const b = Buffer.alloc(4); b.writeInt32LE(v); return b; };

export class CublasLt {
  private readonly handle: number;
  private readonly pref: number;
  private readonly workspace: number;
  private readonly plans = new Map<string, Plan>();
  private readonly one = new Float32Array([1]);
  private readonly zero = new Float32Array([0]);

  constructor(private readonly ctx: CudaContext, private readonly workspaceBytes = 32 << 20) {
    this.handle = create('cublasLtCreate');
    this.pref = create('cublasLtMatmulPreferenceCreate');
    const ws = Buffer.alloc(8);
    ws.writeBigUInt64LE(BigInt(workspaceBytes));
    check('cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)',
      lt().cublasLtMatmulPreferenceSetAttribute(this.pref, PREF_MAX_WORKSPACE_BYTES, ws, 8));
    const p = new BigUint64Array(1);
    cu('cuMemAlloc_v2', p, workspaceBytes);
    this.workspace = Number(p[0]);
  }

  private plan(a: MatmulArgs): Plan {
    const outType = (a.outDType ?? a.dtype) === 'bfloat16' ? CUDA_R_16BF : CUDA_R_32F;
    const key = `${a.dtype}>${a.outDType ?? a.dtype}:${a.rows}:${a.inFeatures}:${a.outFeatures}:${a.bias !== null}:${a.accumulate}`;
    let plan = this.plans.get(key);
    if (plan) return plan;
    const type = a.dtype === 'bfloat16' ? CUDA_R_16BF : CUDA_R_32F;
    const desc = create('cublasLtMatmulDescCreate', CUBLAS_COMPUTE_32F, CUDA_R_32F);
    const set = (attr: number, buf: Buffer, what: string) =>
      check(`cublasLtMatmulDescSetAttribute(${what})`, lt().cublasLtMatmulDescSetAttribute(desc, attr, buf, buf.length));
    set(DESC_TRANSA, int32(CUBLAS_OP_T), 'TRANSA');
    set(DESC_TRANSB, int32(CUBLAS_OP_N), 'TRANSB');
    set(DESC_EPILOGUE, int32(a.bias !== null ? EPILOGUE_BIAS : EPILOGUE_DEFAULT), 'EPILOGUE');
    let biasSlot: Buffer | null = null;
    if (a.bias !== null) {
      biasSlot = Buffer.alloc(8);
      biasSlot.writeBigUInt64LE(BigInt(a.bias));
      set(DESC_BIAS_POINTER, biasSlot, 'BIAS_POINTER');
    }
    const layoutA = create('cublasLtMatrixLayoutCreate', type, a.inFeatures, a.outFeatures, a.inFeatures);
    const layoutB = create('cublasLtMatrixLayoutCreate', type, a.inFeatures, a.rows, a.inFeatures);
    const layoutC = create('cublasLtMatrixLayoutCreate', outType, a.outFeatures, a.rows, a.outFeatures);
    const results = Buffer.alloc(HEURISTIC_RESULT_BYTES * 4);
    const returned = [0];
    check(`cublasLtMatmulAlgoGetHeuristic(${key})`, lt().cublasLtMatmulAlgoGetHeuristic(this.handle, desc, layoutA, layoutB,
      layoutC, layoutC, this.pref, 4, results, returned));
    if (returned[0] < 1) throw new CublasError(`cublasLtMatmulAlgoGetHeuristic(${key})`, 15, 'no algorithm for this shape');
    plan = { desc, a: layoutA, b: layoutB, c: layoutC, algo: Buffer.from(results.subarray(0, 64)), biasSlot, lastBias: a.bias ?? 0 };
    this.plans.set(key, plan);
    return plan;
  }

  matmul(a: MatmulArgs): void {
    const plan = this.plan(a);
    if (a.bias !== null && (a.outDType ?? a.dtype) !== a.dtype) throw new CublasError('cublasLtMatmul', 15, 'a bias with an output type other than the operands\' is not supported');
    if (a.bias !== null && plan.lastBias !== a.bias) {
      plan.biasSlot!.writeBigUInt64LE(BigInt(a.bias));
      check('cublasLtMatmulDescSetAttribute(BIAS_POINTER)', lt().cublasLtMatmulDescSetAttribute(plan.desc, DESC_BIAS_POINTER, plan.biasSlot, 8));
      plan.lastBias = a.bias;
    }
    check(`cublasLtMatmul(${a.rows}x${a.inFeatures} · ${a.outFeatures}x${a.inFeatures}ᵀ, ${a.dtype})`,
      lt().cublasLtMatmul(this.handle, plan.desc, this.one, a.w, plan.a, a.x, plan.b, a.accumulate ? this.one : this.zero,
        a.y, plan.c, a.y, plan.c, plan.algo, this.workspace, this.workspaceBytes, this.ctx.stream));
  }
}

