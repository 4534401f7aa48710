import { FormatError } from '../util/errors.js';

/**
 * A Python unpickler for PyTorch tensor checkpoints that never executes code. It understands the opcodes
 * torch.save emits (protocol 2, plus the few protocol-4 framing ones), resolves storages through their
 * persistent ids, and builds only what an allow-list of globals describes: containers, tensors and
 * storage types. Any other global is refused by name before anything is built.
 */

/** Element type of a torch storage class (`torch.FloatStorage` → float32). */
export const storageDtypes: Record<string, string> = {
  FloatStorage: 'float32', HalfStorage: 'float16', BFloat16Storage: 'bfloat16', DoubleStorage: 'float64',
  LongStorage: 'int64', IntStorage: 'int32', ShortStorage: 'int16', CharStorage: 'int8', ByteStorage: 'uint8',
  BoolStorage: 'bool',
};

/** A reference to a global the checkpoint named (and that the allow-list accepted). */
export class PickleGlobal {
  constructor(readonly module: string, readonly name: string) {}
  get qualifiedName(): string { return `${this.module}.${this.name}`; }
}

/** A storage named by a persistent id: `('storage', torch.FloatStorage, key, location, numel)`. */
export class TorchStorageRef {
  constructor(readonly key: string, readonly storageType: string, readonly dtype: string, readonly location: string, readonly numel: number) {}
}

/** What `torch._utils._rebuild_tensor_v2` describes: a view into a storage. */
export class TorchTensorRef {
  constructor(readonly storage: TorchStorageRef, readonly storageOffset: number, readonly shape: number[], readonly stride: number[]) {}
}

type Reducer = (args: unknown[], fail: (problem: string) => never) => unknown;

const asInt = (value: unknown, what: string, fail: (p: string) => never): number => {
  if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
  return fail(`${what} is not an integer`);
};
const asIntList = (value: unknown, what: string, fail: (p: string) => never): number[] => {
  if (!Array.isArray(value)) return fail(`${what} is not a tuple`);
  return value.map((v, i) => asInt(v, `${what}[${i}]`, fail));
};

const rebuildTensor: Reducer = (args, fail) => {
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof TorchStorageRef)) return fail('_rebuild_tensor_v2 without a storage');
  return new TorchTensorRef(storage, asInt(offset, 'storage offset', fail), asIntList(size, 'size', fail), asIntList(stride, 'stride', fail));
};

/** The callables a tensor checkpoint uses. Storage types are allowed as names only (inside persistent ids). */
const REDUCERS: Record<string, Reducer> = {
  'collections.OrderedDict': (args, fail) => (args.length === 0 ? new Map() : fail('OrderedDict with arguments')),
  'torch._utils._rebuild_tensor_v2': rebuildTensor,
  // A Parameter saved directly: (tensor, requires_grad, backward_hooks[, state]); the tensor is what we keep.
  'torch._utils._rebuild_parameter': (args, fail) => (args[0] instanceof TorchTensorRef ? args[0] : fail('_rebuild_parameter without a tensor')),
  'torch._utils._rebuild_parameter_with_state': (args, fail) => (args[0] instanceof TorchTensorRef ? args[0] : fail('_rebuild_parameter_with_state without a tensor')),
};

function isAllowedGlobal(module: string, name: string): boolean {
  return `${module}.${name}` in REDUCERS || (module === 'torch' && name in storageDtypes);
}

const MARK = Symbol('mark');

/** Unpickle `data` (the `data.pkl` of a torch zip checkpoint); `file` names it in errors. */
export function unpickleTorch(data: Uint8Array, file: string): unknown {
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const stack: unknown[] = [];
  const memo = new Map<number, unknown>();
  let pos = 0;
  let opStart = 0;

  const fail = (problem: string): never => { throw new FormatError(file, `pickle: ${problem} (at byte ${opStart})`); };
  const need = (n: number) => { if (pos + n > bytes.length) fail('truncated data'); };
  const u8 = () => { need(1); return bytes[pos++]; };
  const u16 = () => { need(2); const v = bytes.readUInt16LE(pos); pos += 2; return v; };
  const u32 = () => { need(4); const v = bytes.readUInt32LE(pos); pos += 4; return v; };
  const u64 = () => { need(8); const v = bytes.readBigUInt64LE(pos); pos += 8; if (v > BigInt(bytes.length)) fail('length past the end of the data'); return Number(v); };
  const take = (n: number) => { need(n); const v = bytes.subarray(pos, pos + n); pos += n; return v; };
  const line = () => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) fail('truncated data');
    const v = bytes.toString('latin1', pos, end);
    pos = end + 1;
    return v;
  };
  const pop = () => { if (stack.length === 0) fail('stack underflow'); return stack.pop(); };
  const top = () => { if (stack.length === 0) fail('stack underflow'); return stack[stack.length - 1]; };
  const popMark = (): unknown[] => {
    const at = stack.lastIndexOf(MARK);
    if (at < 0) fail('MARK missing');
    const items = stack.splice(at);
    items.shift();
    return items;
  };
  const global = (module: string, name: string) => {
    if (!isAllowedGlobal(module, name)) {
      throw new FormatError(file, `refuses to load global ${module}.${name}: only PyTorch tensor globals are allowed`);
    }
    return new PickleGlobal(module, name);
  };
  const setItems = (target: unknown, items: unknown[]) => {
    if (!(target instanceof Map)) fail('SETITEM on something that is not a dict');
    for (let i = 0; i + 1 < items.length; i += 2) (target as Map<unknown, unknown>).set(items[i], items[i + 1]);
  };
  const appendItems = (target: unknown, items: unknown[]) => {
    if (!Array.isArray(target)) fail('APPEND on something that is not a list');
    (target as unknown[]).push(...items);
  };
  const persistentLoad = (pid: unknown): TorchStorageRef => {
    if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length !== 5) return fail('unknown persistent id (expected a torch storage)');
    const [, type, key, location, numel] = pid;
    if (!(type instanceof PickleGlobal) || type.module !== 'torch' || !(type.name in storageDtypes)) return fail('persistent id without a storage type');
    if (typeof key !== 'string' || typeof location !== 'string') return fail('persistent id with a bad key or location');
    return new TorchStorageRef(key, type.name, storageDtypes[type.name], location, asInt(numel, 'storage size', fail));
  };

  for (;;) {
    opStart = pos;
    const op = u8();
    switch (op) {
      case 0x80: { const proto = u8(); if (proto > 5) fail(`unsupported pickle protocol ${proto}`); break; } // PROTO
      case 0x95: u64(); break; // FRAME: a length hint only
      case 0x2e: { // STOP
        if (stack.length !== 1) fail(`STOP with ${stack.length} values on the stack`);
        return stack[0];
      }
      case 0x28: stack.push(MARK); break; // MARK
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: stack.push(top()); break; // DUP
      case 0x7d: stack.push(new Map()); break; // EMPTY_DICT
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x29: stack.push([]); break; // EMPTY_TUPLE
      case 0x74: stack.push(popMark()); break; // TUPLE
      case 0x85: { const a = pop(); stack.push([a]); break; } // TUPLE1
      case 0x86: { const b = pop(), a = pop(); stack.push([a, b]); break; } // TUPLE2
      case 0x87: { const c = pop(), b = pop(), a = pop(); stack.push([a, b, c]); break; } // TUPLE3
      case 0x6c: stack.push(popMark()); break; // LIST
      case 0x64: { const m = new Map(); setItems(m, popMark()); stack.push(m); break; } // DICT
      case 0x61: { const v = pop(); appendItems(top(), [v]); break; } // APPEND
      case 0x65: { const items = popMark(); appendItems(top(), items); break; } // APPENDS
      case 0x73: { const v = pop(), k = pop(); setItems(top(), [k, v]); break; } // SETITEM
      case 0x75: { const items = popMark(); setItems(top(), items); break; } // SETITEMS
      case 0x71: memo.set(u8(), top()); break; // BINPUT
      case 0x72: memo.set(u32(), top()); break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x68: case 0x6a: { // BINGET, LONG_BINGET
        const key = op === 0x68 ? u8() : u32();
        if (!memo.has(key)) fail(`memo key ${key} is not defined`);
        stack.push(memo.get(key));
        break;
      }
      case 0x4a: { need(4); stack.push(bytes.readInt32LE(pos)); pos += 4; break; } // BININT
      case 0x4b: stack.push(u8()); break; // BININT1
      case 0x4d: stack.push(u16()); break; // BININT2
      case 0x8a: case 0x8b: { // LONG1, LONG4: little-endian two's complement
        const n = op === 0x8a ? u8() : u32();
        const raw = take(n);
        let value = 0n;
        for (let i = n - 1; i >= 0; i--) value = (value << 8n) | BigInt(raw[i]);
        if (n > 0 && raw[n - 1] & 0x80) value -= 1n << BigInt(8 * n);
        stack.push(value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value);
        break;
      }
      case 0x47: { need(8); stack.push(bytes.readDoubleBE(pos)); pos += 8; break; } // BINFLOAT
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x58: stack.push(take(u32()).toString('utf8')); break; // BINUNICODE
      case 0x8c: stack.push(take(u8()).toString('utf8')); break; // SHORT_BINUNICODE
      case 0x8d: stack.push(take(u64()).toString('utf8')); break; // BINUNICODE8
      case 0x54: stack.push(take(u32()).toString('latin1')); break; // BINSTRING
      case 0x55: stack.push(take(u8()).toString('latin1')); break; // SHORT_BINSTRING
      case 0x42: stack.push(Buffer.from(take(u32()))); break; // BINBYTES
      case 0x43: stack.push(Buffer.from(take(u8()))); break; // SHORT_BINBYTES
      case 0x8e: stack.push(Buffer.from(take(u64()))); break; // BINBYTES8
      case 0x63: { const module = line(); stack.push(global(module, line())); break; } // GLOBAL
      case 0x93: { // STACK_GLOBAL
        const name = pop(), module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL without names');
        stack.push(global(module as string, name as string));
        break;
      }
      case 0x51: stack.push(persistentLoad(pop())); break; // BINPERSID
      case 0x52: { // REDUCE
        const args = pop(), callable = pop();
        if (!(callable instanceof PickleGlobal)) return fail('REDUCE on something that is not a global');
        const reducer = REDUCERS[callable.qualifiedName];
        if (!reducer) return fail(`${callable.qualifiedName} cannot be called`);
        if (!Array.isArray(args)) return fail(`${callable.qualifiedName} called without an argument tuple`);
        stack.push(reducer(args, fail));
        break;
      }
      case 0x62: { // BUILD: state for an object we built (an OrderedDict's _metadata); tensors need none of it
        pop();
        const target = top();
        if (!(target instanceof Map) && !(target instanceof TorchTensorRef)) fail('BUILD on an object that is not a dict or tensor');
        break;
      }
      case 0x69: { // INST names a class and instantiates it: refuse by that name
        const module = line(), name = line();
        global(module, name);
        return fail(`INST ${module}.${name} is not supported`);
      }
      default:
        return fail(`unsupported opcode 0x${op.toString(16).padStart(2, '0')} (not one torch.save emits)`);
    }
  }
}
