import { FormatError } from '../util/errors.js';
import { RangeFile } from './file-range.js';
import { ZipArchive, ZipEntry } from './zip.js';
import { TorchTensorRef, unpickleTorch } from './pickle.js';
import { WeightDtype, bytesPerElement, elementCount } from './dtype.js';

/**
 * A PyTorch zip checkpoint (`pytorch_model.bin`, torch.save format since 1.6): `ARCHIVE/data.pkl`
 * pickles a dict of tensors whose storages live uncompressed in `ARCHIVE/data/KEY`.
 */
export interface TorchBinTensor {
  name: string;
  dtype: WeightDtype;
  shape: number[];
  /** The zip entry of the tensor's storage and the tensor's bytes inside it (storage offset honoured). */
  entry: ZipEntry;
  start: number;
  length: number;
}

export interface TorchBin {
  zip: ZipArchive;
  tensors: TorchBinTensor[];
}

const SUPPORTED: Record<string, WeightDtype> = { float32: 'float32', float16: 'float16', bfloat16: 'bfloat16' };

export async function readTorchBin(file: RangeFile): Promise<TorchBin> {
  const zip = await ZipArchive.open(file);
  const pickleNames = [...zip.entries.keys()].filter((n) => n === 'data.pkl' || n.endsWith('/data.pkl'));
  if (pickleNames.length !== 1) {
    throw new FormatError(file.path, pickleNames.length === 0
      ? 'not a PyTorch checkpoint: the zip has no data.pkl (is it a legacy pre-1.6 torch.save file?)'
      : `ambiguous PyTorch checkpoint: ${pickleNames.length} data.pkl entries`);
  }
  const prefix = pickleNames[0].slice(0, -'data.pkl'.length);
  const byteorder = zip.entries.get(`${prefix}byteorder`);
  if (byteorder) {
    const order = (await zip.read(byteorder)).toString('latin1').trim();
    if (order !== 'little') throw new FormatError(file.path, `tensors are stored ${order}-endian; only little-endian checkpoints are supported`);
  }
  const root = unpickleTorch(await zip.read(zip.entry(pickleNames[0])), file.path);
  if (!(root instanceof Map)) throw new FormatError(file.path, 'the checkpoint is not a dict of tensors (a state_dict)');

  const tensors: TorchBinTensor[] = [];
  for (const [name, value] of root) {
    if (typeof name !== 'string') throw new FormatError(file.path, 'the state_dict has a key that is not a string');
    if (!(value instanceof TorchTensorRef)) throw new FormatError(file.path, `state_dict entry ${name} is not a tensor`);
    tensors.push(locate(file.path, zip, prefix, name, value));
  }
  return { zip, tensors };
}

function locate(path: string, zip: ZipArchive, prefix: string, name: string, t: TorchTensorRef): TorchBinTensor {
  const dtype = SUPPORTED[t.storage.dtype];
  if (!dtype) {
    throw new FormatError(path, `tensor ${name} has dtype ${t.storage.dtype} (torch.${t.storage.storageType}); only float32, float16 and bfloat16 weights are supported`);
  }
  if (t.shape.some((d) => d < 0) || t.storageOffset < 0) throw new FormatError(path, `tensor ${name} has a negative size or offset`);
  if (!isContiguous(t.shape, t.stride)) {
    throw new FormatError(path, `tensor ${name} is not contiguous (shape [${t.shape.join(', ')}], stride [${t.stride.join(', ')}]); save it with .contiguous()`);
  }
  const entry = zip.entries.get(`${prefix}data/${t.storage.key}`);
  if (!entry) throw new FormatError(path, `tensor ${name}: its storage ${prefix}data/${t.storage.key} is missing from the zip`);
  const size = bytesPerElement[dtype];
  const start = t.storageOffset * size;
  const length = elementCount(t.shape) * size;
  if (entry.size !== t.storage.numel * size) {
    throw new FormatError(path, `storage ${t.storage.key} holds ${entry.size} bytes but the pickle says ${t.storage.numel} ${dtype} elements`);
  }
  if (start + length > entry.size) {
    throw new FormatError(path, `tensor ${name} (offset ${t.storageOffset}, shape [${t.shape.join(', ')}]) runs past the end of its storage ${t.storage.key}`);
  }
  return { name, dtype, shape: t.shape, entry, start, length };
}

/** Row-major contiguous: each stride is the product of the sizes after it (dimensions of size 1 may have any stride). */
export function isContiguous(shape: number[], stride: number[]): boolean {
  if (shape.length !== stride.length) return false;
  if (elementCount(shape) === 0) return true;
  let expected = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== expected) return false;
    expected *= shape[i];
  }
  return true;
}

/** One tensor's bytes (little-endian, exactly the tensor's elements). */
export function readTorchBinTensor(zip: ZipArchive, t: TorchBinTensor): Promise<Buffer> {
  return zip.readRange(t.entry, t.start, t.length);
}
