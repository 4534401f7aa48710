/**
 * A minimal WebAssembly binary writer: just what the CPU kernels need (i32 and v128 locals, loops,
 * loads and stores, a few SIMD ops, one imported shared memory). Kernels are generated at run time
 * from readable TypeScript instead of shipping a compiled binary. Encoding per the WebAssembly core
 * spec (binary format) and the fixed-width SIMD proposal.
 */
export type ValueType = 'i32' | 'f32' | 'v128';

const TYPE_CODE: Record<ValueType, number> = { i32: 0x7f, f32: 0x7d, v128: 0x7b };

/** Unsigned LEB128. Numbers up to 2^32 (JavaScript bit ops would go wrong above 2^31, so divide). */
export function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

/** Signed LEB128 (for i32.const). */
export function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    const done = (n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return out;
  }
}

const SIMD_PREFIX = 0xfd;
/** Opcodes after the 0xfd prefix (their LEB128 value). */
const Simd = {
  load: 0x00, load32Splat: 0x09, store: 0x0b, i8x16Shuffle: 0x0d, f32x4Splat: 0x13, f32x4ExtractLane: 0x1f,
  f32x4Add: 228, f32x4Mul: 230,
  f32x4ReplaceLane: 0x20, i32x4Splat: 0x11, f32x4Nearest: 0x6a, i32x4Shl: 0xab, i32x4Add: 0xae,
  f32x4Sub: 0xe5, f32x4Max: 0xe9, i32x4TruncSatF32x4S: 0xf8,
} as const;

/** One function body: declare locals, then append instructions. Methods return `this` to chain. */
export class FunctionBuilder {
  readonly code: number[] = [];
  private readonly localTypes: ValueType[] = [];

  constructor(readonly name: string, readonly params: ValueType[], readonly results: ValueType[] = []) {}

  /** A new local of `type`; returns its index (parameters come first). */
  local(type: ValueType): number {
    this.localTypes.push(type);
    return this.params.length + this.localTypes.length - 1;
  }

  private emit(...bytes: number[]): this {
    this.code.push(...bytes);
    return this;
  }

  private simd(op: number, ...immediates: number[]): this {
    return this.emit(SIMD_PREFIX, ...uleb(op), ...immediates);
  }

  get(index: number): this { return this.emit(0x20, ...uleb(index)); }
  set(index: number): this { return this.emit(0x21, ...uleb(index)); }
  i32(value: number): this { return this.emit(0x41, ...sleb(value | 0)); }
  f32(value: number): this {
    const bytes = new Uint8Array(new Float32Array([value]).buffer);
    return this.emit(0x43, ...bytes);
  }
  i32Add(): this { return this.emit(0x6a); }
  i32Sub(): this { return this.emit(0x6b); }
  i32Mul(): this { return this.emit(0x6c); }
  i32Eqz(): this { return this.emit(0x45); }
  f32Add(): this { return this.emit(0x92); }
  f32Max(): this { return this.emit(0x97); }
  /** f32.store with a constant byte offset (alignment hint 4 bytes). */
  f32Store(offset = 0): this { return this.emit(0x38, 2, ...uleb(offset)); }

  /** `block … end` around `body`; `br_if 0` inside jumps past the end. */
  block(body: () => void): this {
    this.emit(0x02, 0x40);
    body();
    return this.emit(0x0b);
  }

  /** `loop … end` around `body`; `br_if 0` inside jumps back to the start. */
  loop(body: () => void): this {
    this.emit(0x03, 0x40);
    body();
    return this.emit(0x0b);
  }

  brIf(depth: number): this { return this.emit(0x0d, ...uleb(depth)); }

  /** v128.load with a constant byte offset; alignment hint 1 byte (rows need not be aligned). */
  v128Load(offset = 0): this { return this.simd(Simd.load, 0, ...uleb(offset)); }
  v128Store(offset = 0): this { return this.simd(Simd.store, 0, ...uleb(offset)); }
  /** v128.load32_splat: one float32 from memory into all four lanes (alignment hint 4 bytes). */
  v128Load32Splat(offset = 0): this { return this.simd(Simd.load32Splat, 2, ...uleb(offset)); }
  f32x4Splat(): this { return this.simd(Simd.f32x4Splat); }
  /** Bytes of the result from the 32 bytes of (first operand, second operand), by index. */
  i8x16Shuffle(lanes: readonly number[]): this {
    if (lanes.length !== 16 || lanes.some((l) => !(l >= 0 && l < 32))) throw new Error(`bad shuffle lanes ${lanes}`);
    return this.simd(Simd.i8x16Shuffle, ...lanes);
  }
  f32x4ExtractLane(lane: number): this { return this.simd(Simd.f32x4ExtractLane, lane); }
  f32x4Add(): this { return this.simd(Simd.f32x4Add); }
  f32x4Mul(): this { return this.simd(Simd.f32x4Mul); }
  f32x4Sub(): this { return this.simd(Simd.f32x4Sub); }
  f32x4Max(): this { return this.simd(Simd.f32x4Max); }
  /** Round each lane to the nearest integer, ties to even. */
  f32x4Nearest(): this { return this.simd(Simd.f32x4Nearest); }
  f32x4ReplaceLane(lane: number): this { return this.simd(Simd.f32x4ReplaceLane, lane); }
  i32x4Splat(): this { return this.simd(Simd.i32x4Splat); }
  i32x4Add(): this { return this.simd(Simd.i32x4Add); }
  /** Shift each lane left by the i32 on top of the stack. */
  i32x4Shl(): this { return this.simd(Simd.i32x4Shl); }
  /** float32 lanes to int32 lanes, truncating (saturating: NaN gives 0, out of range the nearest bound). */
  i32x4TruncSatF32x4S(): this { return this.simd(Simd.i32x4TruncSatF32x4S); }

  /** The function's code-section entry: local declarations (run-length grouped) then the body. */
  encodeBody(): number[] {
    const groups: [number, ValueType][] = [];
    for (const t of this.localTypes) {
      const last = groups[groups.length - 1];
      if (last && last[1] === t) last[0]++;
      else groups.push([1, t]);
    }
    const body = [...uleb(groups.length), ...groups.flatMap(([n, t]) => [...uleb(n), TYPE_CODE[t]]), ...this.code, 0x0b];
    return [...uleb(body.length), ...body];
  }
}

const utf8 = (s: string): number[] => [...new TextEncoder().encode(s)];
const vector = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const name = (s: string): number[] => [...uleb(utf8(s).length), ...utf8(s)];
const section = (id: number, content: number[]): number[] => [id, ...uleb(content.length), ...content];

/**
 * A module that imports a shared memory `env.memory` (limits in 64 KiB pages) and exports `functions`
 * by name. Each function gets its own type entry: there are few, so no deduplication.
 */
export function encodeModule(functions: FunctionBuilder[], memory: { minPages: number; maxPages: number }): Uint8Array<ArrayBuffer> {
  const types = functions.map((f) => [0x60, ...vector(f.params.map((t) => [TYPE_CODE[t]])), ...vector(f.results.map((t) => [TYPE_CODE[t]]))]);
  const memoryImport = [...name('env'), ...name('memory'), 0x02, 0x03, ...uleb(memory.minPages), ...uleb(memory.maxPages)];
  const exports = functions.map((f, i) => [...name(f.name), 0x00, ...uleb(i)]);
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // "\0asm", version 1
    ...section(1, vector(types)),
    ...section(2, vector([memoryImport])),
    ...section(3, vector(functions.map((_, i) => uleb(i)))),
    ...section(7, vector(exports)),
    ...section(10, vector(functions.map((f) => f.encodeBody()))),
  ];
  return new Uint8Array(bytes);
}
