/**
 * The cuBLASLt bindings both GEMM front ends share (cublaslt.ts for the forward's y = x·Wᵀ,
 * training-gemm.ts for the backward's general GEMMs): the library's functions, status checks that
 * name the call and the status, the enums we use, and one handle with its workspace that picks an
 * algorithm per shape and launches matmuls.
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

export function lt(): Record<string, Fn> {
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
    fns.statusString = lib.func('const char *cublasLtGetStatusString(int status)');
  } catch {
    // older cuBLASLt: our own table
  }
  return fns;
}

export function check(call: string, status: number): void {
  if (status === 0) return;
  let meaning = STATUS[status] ?? 'unknown status';
  try {
    const text = lt().statusString?.(status) as string | undefined;
    if (text && !meaning.includes(text)) meaning = `${meaning}: ${text}`;
  } catch { /* keep the table's name */ }
  throw new CublasError(call, status, meaning);
}

const out = new BigUint64Array(1);
/** Call a cuBLASLt create function that writes a handle through its first argument. */
export function create(call: string, ...args: unknown[]): number {
  out[0] = 0n;
  check(call, lt()[call](out, ...args));
  return Number(out[0]);
}

export const int32 = (v: number) => { const b = Buffer.alloc(4); b.writeInt32LE(v); return b; };

// cublasLt enums (cublasLt.h, cublas_api.h, library_types.h)
export const CUDA_R_32F = 0, CUDA_R_16BF = 14;
export const CUBLAS_COMPUTE_32F = 68;
export const CUBLAS_OP_N = 0, CUBLAS_OP_T = 1;
export const DESC_TRANSA = 3, DESC_TRANSB = 4, DESC_EPILOGUE = 7, DESC_BIAS_POINTER = 8;
export const EPILOGUE_DEFAULT = 1, EPILOGUE_BIAS = 4;
const PREF_MAX_WORKSPACE_BYTES = 1;
const HEURISTIC_RESULT_BYTES = 96; // sizeof(cublasLtMatmulHeuristicResult_t); the algo is its first 64 bytes

/** A matmul descriptor with fp32 compute and scale, its transposes set. */
export function matmulDesc(transA: boolean, transB: boolean): number {
  const desc = create('cublasLtMatmulDescCreate', CUBLAS_COMPUTE_32F, CUDA_R_32F);
  setAttribute(desc, DESC_TRANSA, int32(transA ? CUBLAS_OP_T : CUBLAS_OP_N), 'TRANSA');
  setAttribute(desc, DESC_TRANSB, int32(transB ? CUBLAS_OP_T : CUBLAS_OP_N), 'TRANSB');
  return desc;
}

export function setAttribute(desc: number, attr: number, buf: Buffer, what: string): void {
  check(`cublasLtMatmulDescSetAttribute(${what})`, lt().cublasLtMatmulDescSetAttribute(desc, attr, buf, buf.length));
}

/** One cuBLASLt handle on a stream, with its workspace and a preference capped to it. */
export class LtHandle {
  private readonly handle: number;
  private readonly pref: number;
  private readonly workspace: number;

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

  /** The heuristic's best algorithm for D = op(A)·op(B) (+ C) with these layouts (C and D share one). */
  algorithm(desc: number, a: number, b: number, c: number, what: string): Buffer {
    const results = Buffer.alloc(HEURISTIC_RESULT_BYTES * 4);
    const returned = [0];
    check(`cublasLtMatmulAlgoGetHeuristic(${what})`,
      lt().cublasLtMatmulAlgoGetHeuristic(this.handle, desc, a, b, c, c, this.pref, 4, results, returned));
    if (returned[0] < 1) throw new CublasError(`cublasLtMatmulAlgoGetHeuristic(${what})`, 15, 'no algorithm for this shape');
    return Buffer.from(results.subarray(0, 64));
  }

  /** D = alpha·op(A)·op(B) + beta·C, in place (C = D), on the context's stream. */
  matmul(what: string, desc: number, algo: Buffer, alpha: Float32Array, A: number, aLayout: number, B: number, bLayout: number,
    beta: Float32Array, C: number, cLayout: number): void {
    check(`cublasLtMatmul(${what})`, lt().cublasLtMatmul(this.handle, desc, alpha, A, aLayout, B, bLayout, beta, C, cLayout, C, cLayout,
      algo, this.workspace, this.workspaceBytes, this.ctx.stream));
  }
}
