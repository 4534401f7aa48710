/**
 * The CUDA driver API through koffi: one context (the device's primary context), memory, streams,
 * events, modules, kernel launches and graphs. Every call is checked; a failing one throws CudaError
 * naming the call and the code's meaning (cuGetErrorName / cuGetErrorString).
 *
 * Handles (CUcontext, CUstream, CUfunction, …) and device pointers are carried as plain numbers:
 * koffi passes them as uint64, and device addresses fit in 53 bits.
 */
import koffi, { type LibraryHandle } from 'koffi';
import { loadLibrary } from './libraries.js';

export class CudaError extends Error {
  constructor(readonly call: string, readonly code: number, meaning: string) {
    super(`${call} failed: ${meaning} (CUresult ${code})`);
    this.name = 'CudaError';
  }
}

type Fn = (...args: any[]) => any;

export interface DriverApi {
  lib: LibraryHandle;
  fns: Record<string, Fn>;
}

let api: DriverApi | null = null;

const PROTOTYPES = [
  'int cuInit(uint flags)',
  'int cuDriverGetVersion(_Out_ int *v)',
  'int cuGetErrorName(int error, _Out_ const char **str)',
  'int cuGetErrorString(int error, _Out_ const char **str)',
  'int cuDeviceGetCount(_Out_ int *count)',
  'int cuDeviceGet(_Out_ int *dev, int ordinal)',
  'int cuDeviceGetName(void *name, int len, int dev)',
  'int cuDeviceGetAttribute(_Out_ int *value, int attrib, int dev)',
  'int cuDeviceTotalMem_v2(_Out_ uint64_t *bytes, int dev)',
  'int cuDevicePrimaryCtxRetain(void *pctx, int dev)',
  'int cuCtxSetCurrent(uint64_t ctx)',
  'int cuCtxSynchronize()',
  'int cuMemGetInfo_v2(_Out_ uint64_t *free, _Out_ uint64_t *total)',
  'int cuMemAlloc_v2(void *dptr, uint64_t bytes)',
  'int cuMemFree_v2(uint64_t dptr)',
  'int cuMemAllocHost_v2(_Out_ void **pp, uint64_t bytes)',
  'int cuMemFreeHost(void *p)',
  'int cuMemcpyHtoDAsync_v2(uint64_t dst, void *src, uint64_t bytes, uint64_t stream)',
  'int cuMemcpyDtoHAsync_v2(void *dst, uint64_t src, uint64_t bytes, uint64_t stream)',
  'int cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, uint64_t bytes, uint64_t stream)',
  'int cuMemsetD8Async(uint64_t dst, uint8_t value, uint64_t count, uint64_t stream)',
  'int cuMemsetD32Async(uint64_t dst, uint32_t value, uint64_t count, uint64_t stream)',
  'int cuStreamCreate(void *stream, uint flags)',
  'int cuStreamSynchronize(uint64_t stream)',
  'int cuEventCreate(void *event, uint flags)',
  'int cuEventRecord(uint64_t event, uint64_t stream)',
  'int cuEventRecordWithFlags(uint64_t event, uint64_t stream, uint flags)',
  'int cuEventSynchronize(uint64_t event)',
  'int cuEventQuery(uint64_t event)',
  'int cuEventElapsedTime_v2(_Out_ float *ms, uint64_t start, uint64_t end)',
  'int cuEventDestroy_v2(uint64_t event)',
  'int cuModuleLoadData(void *module, void *image)',
  'int cuModuleGetFunction(void *fn, uint64_t module, const char *name)',
  'int cuFuncSetAttribute(uint64_t fn, int attrib, int value)',
  'int cuLaunchKernel(uint64_t f, uint gx, uint gy, uint gz, uint bx, uint by, uint bz, uint shmem, uint64_t stream, void *params, void *extra)',
  'int cuLaunchKernelEx(void *config, uint64_t f, void *params, void *extra)',
  'int cuStreamBeginCapture_v2(uint64_t stream, int mode)',
  'int cuStreamEndCapture(uint64_t stream, void *graph)',
  'int cuGraphInstantiateWithFlags(void *exec, uint64_t graph, uint64_t flags)',
  'int cuGraphLaunch(uint64_t exec, uint64_t stream)',
  'int cuGraphExecDestroy(uint64_t exec)',
  'int cuGraphDestroy(uint64_t graph)',
  // CUDA 12.0+. The map (first argument) is written at a 64-byte-aligned host address; the arrays are
  // cuuint64_t globalDim[rank], cuuint64_t globalStrides[rank − 1] (bytes), cuuint32_t boxDim[rank],
  // cuuint32_t elementStrides[rank]; the enums are ints (tensor-map.ts).
  'int cuTensorMapEncodeTiled(uint64_t tensorMap, int dataType, uint rank, uint64_t globalAddress, void *globalDim, void *globalStrides, void *boxDim, void *elementStrides, int interleave, int swizzle, int l2Promotion, int oobFill)',
];

/** Load libcuda and bind the calls we use (once). Throws CudaLibraryMissing when there is no driver. */
export function driver(): DriverApi {
  if (api) return api;
  const lib = loadLibrary('libcuda', ['libcuda.so.1', 'libcuda.so']);
  const fns: Record<string, Fn> = {};
  for (const proto of PROTOTYPES) {
    const f = lib.func(proto);
    fns[f.info.name] = f;
  }
  api = { lib, fns };
  return api;
}

/** The meaning of a CUresult, from the driver itself. */
export function errorMeaning(code: number): string {
  const { fns } = driver();
  const name: (string | null)[] = [null], text: (string | null)[] = [null];
  fns.cuGetErrorName(code, name);
  fns.cuGetErrorString(code, text);
  if (!name[0]) return 'unknown error code';
  return text[0] ? `${name[0]}: ${text[0]}` : name[0];
}

/** Call a driver function by name and throw CudaError unless it returns CUDA_SUCCESS. */
export function cu(name: string, ...args: unknown[]): void {
  const code = driver().fns[name](...args) as number;
  if (code !== 0) throw new CudaError(name, code, errorMeaning(code));
}

const handleOut = new BigUint64Array(1);
/** Call a driver function whose first argument is an out-pointer to a handle; return that handle. */
export function cuHandle(name: string, ...args: unknown[]): number {
  handleOut[0] = 0n;
  cu(name, handleOut, ...args);
  return Number(handleOut[0]);
}

export function cuInt(name: string, ...args: unknown[]): number {
  const out = [0];
  cu(name, out, ...args);
  return out[0];
}

// Enum values from cuda.h (CUDA 12/13).
/** A query's answer that the work is still running (cuEventQuery), not an error. */
const CUDA_ERROR_NOT_READY = 600;
export const CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
export const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
export const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
export const CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;
export const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
export const CU_STREAM_NON_BLOCKING = 1;
export const CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1;
export const CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6;

export interface DeviceInfo {
  ordinal: number;
  name: string;
  major: number;
  minor: number;
  multiprocessors: number;
  sharedMemoryOptin: number;
  totalMemory: number;
}

/** A context on one device (the primary context) with one stream everything is enqueued on. */
export class CudaContext {
  readonly device: DeviceInfo;
  readonly context: number;
  readonly stream: number;
  /** True while a graph capture is under way on the stream. */
  capturing = false;
  /**
   * Launch the kernels that support it with programmatic dependent launch (Hopper and later): such a
   * kernel may start while the one before it drains, and waits for it inside (griddepcontrol.wait).
   * MPT_CUDA_PDL=0 turns it off (comparisons).
   */
  pdl: boolean;

  constructor(ordinal = 0) {
    cu('cuInit', 0);
    const count = cuInt('cuDeviceGetCount');
    if (ordinal >= count) throw new CudaError('cuDeviceGet', 101, `CUDA_ERROR_INVALID_DEVICE: device ${ordinal} asked for, ${count} present`);
    const dev = cuInt('cuDeviceGet', ordinal);
    const nameBuf = Buffer.alloc(256);
    cu('cuDeviceGetName', nameBuf, 256, dev);
    const attr = (a: number) => cuInt('cuDeviceGetAttribute', a, dev);
    const total = [0n as number | bigint];
    cu('cuDeviceTotalMem_v2', total, dev);
    this.device = {
      ordinal,
      name: nameBuf.toString('utf8', 0, nameBuf.indexOf(0)),
      major: attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
      minor: attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
      multiprocessors: attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
      sharedMemoryOptin: attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
      totalMemory: Number(total[0]),
    };
    this.context = cuHandle('cuDevicePrimaryCtxRetain', dev);
    cu('cuCtxSetCurrent', this.context);
    this.stream = cuHandle('cuStreamCreate', CU_STREAM_NON_BLOCKING);
    this.pdl = this.device.major >= 9 && process.env.MPT_CUDA_PDL !== '0';
  }

  synchronize(): void {
    cu('cuStreamSynchronize', this.stream);
  }

  memoryInfo(): { free: number; total: number } {
    const f = [0 as number | bigint], t = [0 as number | bigint];
    cu('cuMemGetInfo_v2', f, t);
    return { free: Number(f[0]), total: Number(t[0]) };
  }

  /** Host → device, waiting until the host buffer has been read (pageable memory). */
  copyIn(dst: number, src: ArrayBufferView, bytes = src.byteLength): void {
    cu('cuMemcpyHtoDAsync_v2', dst, src, bytes, this.stream);
    this.synchronize();
  }

  /**
   * Host → device in stream order without waiting: from pageable memory the driver has copied the
   * source out before this returns, so the caller may reuse it at once.
   */
  copyInAsync(dst: number, src: ArrayBufferView, bytes = src.byteLength): void {
    cu('cuMemcpyHtoDAsync_v2', dst, src, bytes, this.stream);
  }

  /** Device → host after everything enqueued before it. */
  copyOut(dst: ArrayBufferView, src: number, bytes = dst.byteLength): void {
    cu('cuMemcpyDtoHAsync_v2', dst, src, bytes, this.stream);
    this.synchronize();
  }

  /** Device → pinned host memory in stream order, without waiting (see PinnedBuffer; wait on an event). */
  copyOutAsync(dst: PinnedBuffer, src: number, bytes: number, dstOffset = 0): void {
    if (dstOffset < 0 || dstOffset + bytes > dst.bytes) throw new Error(`copyOutAsync: ${bytes} bytes at ${dstOffset} overrun a pinned buffer of ${dst.bytes}`);
    cu('cuMemcpyDtoHAsync_v2', dst.address + BigInt(dstOffset), src, bytes, this.stream);
  }

  /** Pinned host memory → device in stream order, without waiting (the caller keeps `src` unchanged until an event after this copy completes). */
  copyInPinned(dst: number, src: PinnedBuffer, bytes: number): void {
    if (bytes > src.bytes) throw new Error(`copyInPinned: ${bytes} bytes from a pinned buffer of ${src.bytes}`);
    if (bytes > 0) cu('cuMemcpyHtoDAsync_v2', dst, src.address, bytes, this.stream);
  }

  copyDevice(dst: number, src: number, bytes: number): void {
    if (bytes > 0) cu('cuMemcpyDtoDAsync_v2', dst, src, bytes, this.stream);
  }

  fill32(dst: number, value: number, count: number): void {
    if (count > 0) cu('cuMemsetD32Async', dst, value >>> 0, count, this.stream);
  }
}

/**
 * Page-locked host memory (cuMemAllocHost): the only kind a device → host copy can fill asynchronously
 * (into pageable memory the driver copies through a staging buffer and the call waits). Free it by hand.
 */
export class PinnedBuffer {
  /** The host address (koffi passes it where the driver takes a void *). */
  readonly address: bigint;
  /** The same bytes as a JS buffer; read it only after an event recorded after the copy has completed. */
  readonly view: ArrayBuffer;
  private live = true;

  constructor(readonly bytes: number, purpose: string) {
    const out: unknown[] = [null];
    const code = driver().fns.cuMemAllocHost_v2(out, bytes) as number;
    if (code !== 0) throw new CudaError('cuMemAllocHost_v2', code, `could not pin ${bytes} bytes of host memory for ${purpose}: ${errorMeaning(code)}`);
    this.address = BigInt(out[0] as bigint | number);
    this.view = koffi.view(this.address, bytes);
  }

  free(): void {
    if (!this.live) return;
    this.live = false;
    cu('cuMemFreeHost', this.address);
  }
}

export const CU_EVENT_DISABLE_TIMING = 2;

/** Timing (or, with CU_EVENT_DISABLE_TIMING, cheaper host waits) with CUDA events on the context's stream. */
export class CudaEvent {
  readonly handle: number;
  constructor(private readonly ctx: CudaContext, flags = 0) {
    this.handle = cuHandle('cuEventCreate', flags);
  }
  /** Block the host until the work recorded before this event has completed. */
  synchronize(): void {
    cu('cuEventSynchronize', this.handle);
  }
  /** Record on the stream; inside a graph capture this becomes an event node that times each replay. */
  record(): void {
    if (this.ctx.capturing) cu('cuEventRecordWithFlags', this.handle, this.ctx.stream, 1); // CU_EVENT_RECORD_EXTERNAL
    else cu('cuEventRecord', this.handle, this.ctx.stream);
  }
  /** Whether the work recorded before this event has completed, without waiting (cuEventQuery). */
  done(): boolean {
    const code = driver().fns.cuEventQuery(this.handle) as number;
    if (code === 0) return true;
    if (code === CUDA_ERROR_NOT_READY) return false;
    throw new CudaError('cuEventQuery', code, errorMeaning(code));
  }
  /** Milliseconds from `start` to this event (waits for this event). */
  since(start: CudaEvent): number {
    cu('cuEventSynchronize', this.handle);
    const ms = [0];
    cu('cuEventElapsedTime_v2', ms, start.handle, this.handle);
    return ms[0];
  }
  destroy(): void {
    cu('cuEventDestroy_v2', this.handle);
  }
}

/**
 * `size` bytes of native host memory at an `align`-byte-aligned address (koffi's allocations are only
 * 8-byte aligned), as `bytes` to write and `address` to hand the driver; `block` holds the allocation,
 * which koffi frees once nothing references it.
 */
export function alignedHostBytes(size: number, align: number): { block: unknown; address: bigint; bytes: Uint8Array } {
  const block = koffi.alloc('uint64', Math.ceil((size + align) / 8));
  const base = koffi.address(block), skip = (align - Number(base % BigInt(align))) % align;
  return { block, address: base + BigInt(skip), bytes: new Uint8Array(koffi.view(block, size + align), skip, size) };
}

/** A kernel argument: a number (kinds p, q, i, u, f, d) or the 128 bytes of a CUtensorMap (kind m, tensor-map.ts). */
export type KernelArg = number | Uint8Array;

/** Bytes of a CUtensorMap (cuda.h: 16 opaque 64-bit words, 64-byte aligned). */
export const TENSOR_MAP_BYTES = 128;

/**
 * Kernel arguments packed in native memory: one 8-byte slot per argument and an array of pointers
 * to the slots, written once. cuLaunchKernel reads each argument's bytes (as many as the kernel's
 * parameter has) where its pointer points and copies them, so the same block serves every launch (and
 * graph capture keeps what was there at capture time). A tensor map (kind `m`, passed by value as a
 * `const __grid_constant__` parameter) does not fit a slot: its 128 bytes go to one of MAPS 64-byte-
 * aligned map slots and that argument's pointer is turned to it for this launch (and back afterwards).
 */
export class LaunchArgs {
  static readonly MAX = 48;
  static readonly MAPS = 4;
  private readonly slots = koffi.alloc('uint64', LaunchArgs.MAX);
  private readonly pointers = koffi.alloc('uint64', LaunchArgs.MAX);
  // MAPS map slots, 64-byte aligned as the driver reads a CUtensorMap.
  private readonly maps = alignedHostBytes(LaunchArgs.MAPS * TENSOR_MAP_BYTES, 64);
  private readonly view: DataView;
  private readonly ptrView: DataView;
  private readonly slotBase: bigint;
  /** Arguments whose pointer points at a map slot since the last pack. */
  private redirected: number[] = [];

  constructor() {
    this.view = new DataView(koffi.view(this.slots, LaunchArgs.MAX * 8));
    this.slotBase = koffi.address(this.slots);
    this.ptrView = new DataView(koffi.view(this.pointers, LaunchArgs.MAX * 8));
    for (let i = 0; i < LaunchArgs.MAX; i++) this.ptrView.setBigUint64(i * 8, this.slotBase + BigInt(i * 8), true);
  }

  /**
   * Write the arguments: `p` pointer (number), `i` int32, `u` uint32, `f` float32, `d` float64, `q` int64,
   * `m` a tensor map (a Uint8Array of TENSOR_MAP_BYTES; at most MAPS a launch).
   */
  pack(kinds: string, values: readonly KernelArg[]): unknown {
    if (kinds.length !== values.length) throw new Error(`kernel argument kinds ${kinds} do not match ${values.length} values`);
    for (const i of this.redirected) this.ptrView.setBigUint64(i * 8, this.slotBase + BigInt(i * 8), true);
    this.redirected = [];
    for (let i = 0; i < values.length; i++) {
      const o = i * 8, arg = values[i];
      if (kinds[i] === 'm') {
        const slot = this.redirected.length;
        if (!(arg instanceof Uint8Array) || arg.length !== TENSOR_MAP_BYTES) throw new Error(`kernel argument ${i} (kind m) is not a ${TENSOR_MAP_BYTES}-byte tensor map`);
        if (slot >= LaunchArgs.MAPS) throw new Error(`more than ${LaunchArgs.MAPS} tensor maps in one launch`);
        this.maps.bytes.set(arg, slot * TENSOR_MAP_BYTES);
        this.ptrView.setBigUint64(o, this.maps.address + BigInt(slot * TENSOR_MAP_BYTES), true);
        this.redirected.push(i);
        continue;
      }
      if (typeof arg !== 'number') throw new Error(`kernel argument ${i} (kind ${kinds[i]}) is not a number`);
      const v = arg;
      switch (kinds[i]) {
        case 'p': this.view.setBigUint64(o, BigInt(v), true); break;
        case 'q': this.view.setBigInt64(o, BigInt(Math.trunc(v)), true); break;
        case 'i': this.view.setInt32(o, v, true); break;
        case 'u': this.view.setUint32(o, v >>> 0, true); break;
        case 'f': this.view.setFloat32(o, v, true); break;
        case 'd': this.view.setFloat64(o, v, true); break;
        default: throw new Error(`unknown kernel argument kind ${kinds[i]}`);
      }
    }
    return this.pointers;
  }
}

/**
 * The CUlaunchConfig of cuLaunchKernelEx with one CUlaunchAttribute (programmatic stream
 * serialization), in native memory written once per launch. Layout (cuda.h, 64-bit):
 * CUlaunchConfig { uint gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes
 * (0..27); CUstream hStream @32; CUlaunchAttribute *attrs @40; uint numAttrs @48 } = 56 bytes, then at
 * 56 the CUlaunchAttribute { CUlaunchAttributeID id @0; 4 bytes padding; union value[64] @8 } = 72 bytes,
 * whose value for this attribute is `int programmaticStreamSerializationAllowed` at its start.
 */
class LaunchConfig {
  private static readonly BYTES = 56 + 72;
  private readonly block = koffi.alloc('uint64', LaunchConfig.BYTES / 8);
  private readonly view: DataView;

  constructor() {
    this.view = new DataView(koffi.view(this.block, LaunchConfig.BYTES));
    for (let o = 0; o < LaunchConfig.BYTES; o += 4) this.view.setUint32(o, 0, true);
    const base = koffi.address(this.block);
    this.view.setBigUint64(40, base + 56n, true);          // attrs
    this.view.setUint32(48, 1, true);                      // numAttrs
    this.view.setUint32(56, CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, true);
    this.view.setInt32(56 + 8, 1, true);                   // programmaticStreamSerializationAllowed
  }

  fill(grid: readonly number[], block: readonly number[], sharedBytes: number, stream: number): unknown {
    const v = this.view;
    v.setUint32(0, grid[0], true); v.setUint32(4, grid[1] ?? 1, true); v.setUint32(8, grid[2] ?? 1, true);
    v.setUint32(12, block[0], true); v.setUint32(16, block[1] ?? 1, true); v.setUint32(20, block[2] ?? 1, true);
    v.setUint32(24, sharedBytes, true);
    v.setBigUint64(32, BigInt(stream), true);
    return this.block;
  }
}

/**
 * A loaded module's kernel, launched on the context's stream. `dependentLaunch`: the kernel starts
 * with griddepcontrol.wait (before touching anything an earlier kernel writes), so it may be launched
 * with programmatic dependent launch when the context allows it.
 */
export class Kernel {
  private static readonly args = new LaunchArgs();
  private static config: LaunchConfig | null = null;
  private dynamicShared = 0;

  constructor(private readonly ctx: CudaContext, readonly name: string, readonly handle: number, readonly argKinds: string,
    readonly dependentLaunch = false) {}

  /** Allow more than 48 KB of dynamic shared memory (asked once per size). */
  reserveShared(bytes: number): void {
    if (bytes > 48 * 1024 && bytes > this.dynamicShared) {
      cu('cuFuncSetAttribute', this.handle, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes);
      this.dynamicShared = bytes;
    }
  }

  launch(grid: readonly number[], block: readonly number[], values: readonly KernelArg[], sharedBytes = 0): void {
    const params = Kernel.args.pack(this.argKinds, values);
    this.reserveShared(sharedBytes);
    let code: number;
    if (this.dependentLaunch && this.ctx.pdl) {
      const config = (Kernel.config ??= new LaunchConfig()).fill(grid, block, sharedBytes, this.ctx.stream);
      code = driver().fns.cuLaunchKernelEx(config, this.handle, params, null) as number;
    } else {
      code = driver().fns.cuLaunchKernel(this.handle, grid[0], grid[1] ?? 1, grid[2] ?? 1,
        block[0], block[1] ?? 1, block[2] ?? 1, sharedBytes, this.ctx.stream, params, null) as number;
    }
    if (code !== 0) throw new CudaError(`cuLaunchKernel(${this.name})`, code, errorMeaning(code));
  }
}

export function loadModule(image: Uint8Array): number {
  return cuHandle('cuModuleLoadData', image);
}

export function moduleFunction(module: number, name: string): number {
  return cuHandle('cuModuleGetFunction', module, name);
}

/** A stream capture turned into an executable graph: replay() runs the captured work again. */
export class CudaGraph {
  private constructor(private readonly ctx: CudaContext, private readonly graph: number, private readonly exec: number) {}

  static capture(ctx: CudaContext, fn: () => void): CudaGraph {
    cu('cuStreamBeginCapture_v2', ctx.stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
    let graph = 0;
    ctx.capturing = true;
    try {
      fn();
    } finally {
      ctx.capturing = false;
      const out = new BigUint64Array(1);
      cu('cuStreamEndCapture', ctx.stream, out);
      graph = Number(out[0]);
    }
    const exec = cuHandle('cuGraphInstantiateWithFlags', graph, 0);
    return new CudaGraph(ctx, graph, exec);
  }

  replay(): void {
    cu('cuGraphLaunch', this.exec, this.ctx.stream);
  }

  destroy(): void {
    cu('cuGraphExecDestroy', this.exec);
    cu('cuGraphDestroy', this.graph);
  }
}
