/** The element types a checkpoint may hold for us: everything else is refused by name when opened. */
export type WeightDtype = 'float32' | 'float16' | 'bfloat16';

export const bytesPerElement: Record<WeightDtype, number> = { float32: 4, float16: 2, bfloat16: 2 };

/** safetensors' dtype codes for the types we read and write. */
export const safetensorsDtype: Record<string, WeightDtype> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };
export const safetensorsCode: Record<WeightDtype, string> = { float32: 'F32', float16: 'F16', bfloat16: 'BF16' };

export const elementCount = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);
