import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { fixture } from './fixtures.js';
import { FormatError } from '../src/util/errors.js';
import { RangeFile } from '../src/io/file-range.js';
import { crc32, ZipArchive } from '../src/io/zip.js';
import { unpickleTorch, TorchTensorRef } from '../src/io/pickle.js';
import { readTorchBin, readTorchBinTensor, isContiguous } from '../src/io/torch-bin.js';
import { openModelFolder } from '../src/io/model-folder.js';

// ---- hand-made pickles, written opcode by opcode as torch.save (protocol 2) writes them ----

const op = (...bytes: number[]) => Buffer.from(bytes);
const PROTO2 = op(0x80, 2), MARK = op(0x28), TUPLE = op(0x74), REDUCE = op(0x52), BINPERSID = op(0x51);
const EMPTY_DICT = op(0x7d), EMPTY_TUPLE = op(0x29), SETITEMS = op(0x75), NEWFALSE = op(0x89), STOP = op(0x2e), BUILD = op(0x62);
const global = (module: string, name: string) => Buffer.from(`c${module}\n${name}\n`, 'latin1');
const str = (s: string) => {
  const bytes = Buffer.from(s, 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32LE(bytes.length);
  return Buffer.concat([op(0x58), length, bytes]);
};
const int = (n: number) => {
  const b = Buffer.alloc(5);
  b[0] = 0x4a;
  b.writeInt32LE(n, 1);
  return b;
};
const tuple = (...items: Buffer[]) => Buffer.concat([MARK, ...items, TUPLE]);

interface CraftedTensor { name: string; storageType: string; key: string; numel: number; offset: number; shape: number[]; stride: number[]; parameter?: boolean }

function tensorPickle(t: CraftedTensor): Buffer {
  const storage = Buffer.concat([tuple(str('storage'), global('torch', t.storageType), str(t.key), str('cpu'), int(t.numel)), BINPERSID]);
  const hooks = Buffer.concat([global('collections', 'OrderedDict'), EMPTY_TUPLE, REDUCE]);
  const tensor = Buffer.concat([
    global('torch._utils', '_rebuild_tensor_v2'),
    tuple(storage, int(t.offset), tuple(...t.shape.map(int)), tuple(...t.stride.map(int)), NEWFALSE, hooks), REDUCE,
  ]);
  if (!t.parameter) return tensor;
  return Buffer.concat([global('torch._utils', '_rebuild_parameter'), tuple(tensor, NEWFALSE, hooks), REDUCE]);
}

/** A state_dict pickle; `ordered` writes it as model.state_dict() does (an OrderedDict with _metadata set by BUILD). */
function stateDictPickle(tensors: CraftedTensor[], ordered = false): Buffer {
  const items = Buffer.concat([MARK, ...tensors.flatMap((t) => [str(t.name), tensorPickle(t)]), SETITEMS]);
  if (!ordered) return Buffer.concat([PROTO2, EMPTY_DICT, items, STOP]);
  const metadata = Buffer.concat([EMPTY_DICT, MARK, str('_metadata'), global('collections', 'OrderedDict'), EMPTY_TUPLE, REDUCE, SETITEMS]);
  return Buffer.concat([PROTO2, global('collections', 'OrderedDict'), EMPTY_TUPLE, REDUCE, items, metadata, BUILD, STOP]);
}

// ---- a small zip writer (stored or deflated entries, optionally in ZIP64 form) ----

interface ZipInput { name: string; data: Buffer; deflate?: boolean }

function makeZip(entries: ZipInput[], zip64 = false): Buffer {
  const parts: Buffer[] = [], central: Buffer[] = [];
  let offset = 0;
  const u16 = (n: number) => { const b = Buffer.alloc(2); b.writeUInt16LE(n); return b; };
  const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };
  const u64 = (n: number) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(n)); return b; };
  const FF = 0xffffffff;
  for (const e of entries) {
    const name = Buffer.from(e.name);
    const stored = e.deflate ? deflateRawSync(e.data) : e.data;
    const method = e.deflate ? 8 : 0;
    const crc = crc32(e.data);
    const localExtra = zip64 ? Buffer.concat([u16(1), u16(16), u64(e.data.length), u64(stored.length)]) : Buffer.alloc(0);
    const local = Buffer.concat([
      u32(0x04034b50), u16(zip64 ? 45 : 20), u16(0), u16(method), u16(0), u16(0x21), u32(crc),
      u32(zip64 ? FF : stored.length), u32(zip64 ? FF : e.data.length), u16(name.length), u16(localExtra.length), name, localExtra,
    ]);
    const centralExtra = zip64 ? Buffer.concat([u16(1), u16(24), u64(e.data.length), u64(stored.length), u64(offset)]) : Buffer.alloc(0);
    central.push(Buffer.concat([
      u32(0x02014b50), u16(zip64 ? 45 : 20), u16(zip64 ? 45 : 20), u16(0), u16(method), u16(0), u16(0x21), u32(crc),
      u32(zip64 ? FF : stored.length), u32(zip64 ? FF : e.data.length), u16(name.length), u16(centralExtra.length), u16(0),
      u16(0), u16(0), u32(0), u32(zip64 ? FF : offset), name, centralExtra,
    ]));
    parts.push(local, stored);
    offset += local.length + stored.length;
  }
  const directory = Buffer.concat(central);
  const tail: Buffer[] = [directory];
  if (zip64) {
    const recordOffset = offset + directory.length;
    tail.push(Buffer.concat([
      u32(0x06064b50), u64(44), u16(45), u16(45), u32(0), u32(0), u64(entries.length), u64(entries.length), u64(directory.length), u64(offset),
    ]));
    tail.push(Buffer.concat([u32(0x07064b50), u32(0), u64(recordOffset), u32(1)]));
  }
  tail.push(Buffer.concat([
    u32(0x06054b50), u16(0), u16(0), u16(zip64 ? 0xffff : entries.length), u16(zip64 ? 0xffff : entries.length),
    u32(zip64 ? FF : directory.length), u32(zip64 ? FF : offset), u16(0),
  ]));
  return Buffer.concat([...parts, ...tail]);
}

/** A torch-style checkpoint zip: archive/data.pkl, archive/byteorder, archive/data/KEY. */
function torchZip(pickle: Buffer, storages: Record<string, Buffer>, options: { zip64?: boolean; deflatePickle?: boolean } = {}): Buffer {
  return makeZip([
    { name: 'archive/data.pkl', data: pickle, deflate: options.deflatePickle },
    { name: 'archive/byteorder', data: Buffer.from('little') },
    ...Object.entries(storages).map(([key, data]) => ({ name: `archive/data/${key}`, data })),
  ], options.zip64);
}

async function writeTemp(name: string, bytes: Buffer): Promise<string> {
  const dir = await fs.mkdtemp(join(tmpdir(), 'mpt-pickle-'));
  const path = join(dir, name);
  await fs.writeFile(path, bytes);
  return path;
}

async function loadCrafted(bytes: Buffer) {
  const file = await RangeFile.open(await writeTemp('crafted.bin', bytes));
  try {
    const { zip, tensors } = await readTorchBin(file);
    const out = new Map<string, { dtype: string; shape: number[]; values: number[] }>();
    for (const t of tensors) {
      const raw = await readTorchBinTensor(zip, t);
      out.set(t.name, { dtype: t.dtype, shape: t.shape, values: [...new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4)] });
    }
    return out;
  } finally {
    await file.close();
  }
}

const ten = Buffer.from(Float32Array.from({ length: 10 }, (_, i) => i + 0.5).buffer);
const sharedStorage: CraftedTensor[] = [
  { name: 'a', storageType: 'FloatStorage', key: '0', numel: 10, offset: 0, shape: [2, 3], stride: [3, 1] },
  { name: 'b', storageType: 'FloatStorage', key: '0', numel: 10, offset: 6, shape: [4], stride: [1], parameter: true },
];

test('crafted checkpoints: storage offsets, shared storages, parameters, OrderedDict state dicts, deflated pickles, ZIP64', async () => {
  for (const [ordered, zip64, deflatePickle] of [[false, false, false], [true, false, true], [true, true, false], [false, true, true]]) {
    const tensors = await loadCrafted(torchZip(stateDictPickle(sharedStorage, ordered), { 0: ten }, { zip64, deflatePickle }));
    assert.deepEqual([...tensors.keys()], ['a', 'b']);
    assert.deepEqual(tensors.get('a'), { dtype: 'float32', shape: [2, 3], values: [0.5, 1.5, 2.5, 3.5, 4.5, 5.5] });
    assert.deepEqual(tensors.get('b'), { dtype: 'float32', shape: [4], values: [6.5, 7.5, 8.5, 9.5] });
  }
});

test('the fixture checkpoint has the layout our zip reader expects (entries stored, names under one archive folder)', async () => {
  const file = await RangeFile.open(fixture('mosaic-gpt-tiny', 'pytorch_model.bin'));
  try {
    const zip = await ZipArchive.open(file);
    assert.ok(zip.entries.has('pytorch_model/data.pkl'));
    for (const e of zip.entries.values()) if (e.name.includes('/data/')) assert.equal(e.method, 0, e.name);
    const root = unpickleTorch(await zip.read(zip.entry('pytorch_model/data.pkl')), file.path) as Map<string, TorchTensorRef>;
    assert.ok(root.get('transformer.wte.weight') instanceof TorchTensorRef);
    assert.deepEqual(root.get('transformer.wte.weight')!.shape, [50432, 64]);
  } finally {
    await file.close();
  }
});

test('a pickle naming a forbidden global is refused by name, and nothing is built', async () => {
  const osSystem = Buffer.concat([PROTO2, global('os', 'system'), tuple(str('echo pwned')), REDUCE, STOP]);
  assert.throws(() => unpickleTorch(osSystem, 'evil.bin'), (error: Error) => {
    assert.ok(error instanceof FormatError);
    assert.equal(error.message, 'evil.bin: refuses to load global os.system: only PyTorch tensor globals are allowed');
    return true;
  });
  // STACK_GLOBAL (protocol 4) and INST (protocol 0) name globals too.
  const stackGlobal = Buffer.concat([op(0x80, 4), op(0x8c, 8), Buffer.from('builtins'), op(0x8c, 4), Buffer.from('eval'), op(0x93), STOP]);
  assert.throws(() => unpickleTorch(stackGlobal, 'x.bin'), /refuses to load global builtins\.eval/);
  const inst = Buffer.concat([PROTO2, MARK, Buffer.from('isubprocess\nPopen\n'), STOP]);
  assert.throws(() => unpickleTorch(inst, 'x.bin'), /refuses to load global subprocess\.Popen/);
  // A forbidden global hidden inside a real-looking state dict, in a model folder.
  const evilDict = Buffer.concat([PROTO2, EMPTY_DICT, MARK, str('w'), global('posix', 'system'), tuple(str('id')), REDUCE, SETITEMS, STOP]);
  const path = await writeTemp('pytorch_model.bin', torchZip(evilDict, {}));
  await fs.copyFile(fixture('mosaic-gpt-tiny', 'config.json'), join(path, '..', 'config.json'));
  await assert.rejects(openModelFolder(join(path, '..')), (error: Error) => {
    assert.ok(error instanceof FormatError);
    assert.equal(error.message, `${path}: refuses to load global posix.system: only PyTorch tensor globals are allowed`);
    return true;
  });
});

test('malformed pickles and checkpoints give clear FormatErrors', async () => {
  assert.throws(() => unpickleTorch(Buffer.concat([PROTO2, op(0x81), STOP]), 'p'), /unsupported opcode 0x81/);
  assert.throws(() => unpickleTorch(Buffer.concat([PROTO2, EMPTY_DICT]), 'p'), /truncated data/);
  assert.throws(() => unpickleTorch(Buffer.concat([PROTO2, op(0x68, 7), STOP]), 'p'), /memo key 7 is not defined/);
  assert.throws(() => unpickleTorch(Buffer.concat([PROTO2, global('torch', 'FloatStorage'), EMPTY_TUPLE, REDUCE, STOP]), 'p'), /torch\.FloatStorage cannot be called/);
  assert.throws(() => unpickleTorch(Buffer.concat([PROTO2, tuple(str('module'), str('x')), BINPERSID, STOP]), 'p'), /unknown persistent id/);

  const cases: Array<[CraftedTensor[], Record<string, Buffer>, RegExp]> = [
    [[{ ...sharedStorage[0], stride: [1, 2] }], { 0: ten }, /tensor a is not contiguous \(shape \[2, 3\], stride \[1, 2\]\)/],
    [[{ ...sharedStorage[0], storageType: 'LongStorage' }], { 0: Buffer.alloc(80) }, /tensor a has dtype int64 \(torch\.LongStorage\); only float32, float16 and bfloat16/],
    [[{ ...sharedStorage[1], offset: 8 }], { 0: ten }, /tensor b .* runs past the end of its storage 0/],
    [[sharedStorage[0]], { 0: ten.subarray(0, 20) }, /storage 0 holds 20 bytes but the pickle says 10 float32 elements/],
    [[sharedStorage[0]], {}, /its storage archive\/data\/0 is missing/],
  ];
  for (const [tensors, storages, pattern] of cases) {
    await assert.rejects(loadCrafted(torchZip(stateDictPickle(tensors), storages)), (error: Error) => {
      assert.ok(error instanceof FormatError, `${error.name}: ${error.message}`);
      assert.match(error.message, /crafted\.bin: /);
      assert.match(error.message, pattern);
      return true;
    });
  }
  const list = Buffer.concat([PROTO2, op(0x5d), STOP]);
  await assert.rejects(loadCrafted(torchZip(list, {})), /not a dict of tensors/);
  await assert.rejects(loadCrafted(makeZip([{ name: 'x/other.txt', data: Buffer.from('hi') }])), /no data\.pkl/);
  const bigEndian = makeZip([{ name: 'a/data.pkl', data: stateDictPickle([]) }, { name: 'a/byteorder', data: Buffer.from('big') }]);
  await assert.rejects(loadCrafted(bigEndian), /big-endian/);
});

test('contiguity: dimensions of size 1 may carry any stride', () => {
  assert.ok(isContiguous([2, 3], [3, 1]));
  assert.ok(isContiguous([1, 3], [99, 1]));
  assert.ok(isContiguous([], []));
  assert.ok(!isContiguous([3, 2], [1, 3]));
  assert.ok(!isContiguous([4], [2]));
});
