import type * as tf from '@tensorflow/tfjs';

/**
 * Post-training weight quantisation in the TF.js weights-manifest format, so that stock `tf.loadLayersModel`
 * dequantises on load (tfjs-core `io/io_utils.ts` decodeWeight):
 * - uint8: each manifest entry gets `quantization: {dtype: 'uint8', scale, min}`; the loader computes
 *   `float32(q * scale + min)` for each byte q. The range is widened to include 0 and nudged so that 0 is exactly
 *   representable (as tfjs-converter does): zero biases and ReLU-dead weights stay exactly zero.
 * - float16: `quantization: {dtype: 'float16'}`; IEEE half precision, little-endian, 2 bytes per value.
 * Only float32 weights are quantised; other dtypes are copied through unchanged.
 */
export const QUANTIZE_DTYPES = ['uint8', 'float16'] as const;
export type QuantizeDtype = (typeof QUANTIZE_DTYPES)[number];

export interface Uint8Quantized {
  data: Uint8Array;
  scale: number;
  min: number;
}

const UINT8_LEVELS = 255;

/** Affine uint8 quantisation; |dequantizeUint8(q) − v| ≤ scale/2 (plus float32 rounding) for every input v. */
export function quantizeUint8(values: Float32Array): Uint8Quantized {
  let lo = 0;
  let hi = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const data = new Uint8Array(values.length);
  if (hi === lo) return { data, scale: 1, min: 0 };
  const scale = (hi - lo) / UINT8_LEVELS;
  const zeroPoint = Math.round(-lo / scale);
  const min = -zeroPoint * scale;
  for (let i = 0; i < values.length; i++) {
    const q = Math.round((values[i]! - min) / scale);
    data[i] = q < 0 ? 0 : q > UINT8_LEVELS ? UINT8_LEVELS : q;
  }
  return { data, scale, min };
}

/** Exactly what tfjs's loader does with a uint8-quantised weight. */
export function dequantizeUint8(data: Uint8Array, scale: number, min: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = data[i]! * scale + min;
  return out;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * float32 → IEEE 754 half bits, round to nearest even. Finite values beyond the half range saturate to ±65504
 * rather than becoming infinity (tfjs's decoder does not decode half infinities as infinity anyway).
 */
export function float32ToFloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7bff;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (half & 1) === 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) === 1)) half++;
  if (half >= 0x7c00) half = 0x7bff;
  return sign | half;
}

export function float16BitsToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export function quantizeFloat16(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = float32ToFloat16Bits(values[i]!);
  return out;
}

export interface QuantizedWeights {
  weightSpecs: tf.io.WeightsManifestEntry[];
  weightData: ArrayBuffer;
}

const BYTES_PER_VALUE: Record<string, number> = { float32: 4, int32: 4, bool: 1 };

function valueCount(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Quantises every float32 entry of an unquantised weights manifest. `weightData` is the concatenation of the
 * entries in manifest order, as `model.save` produces it. String weights are not supported (zoo models have none).
 */
export function quantizeWeights(weightSpecs: tf.io.WeightsManifestEntry[], weightData: ArrayBuffer, dtype: QuantizeDtype): QuantizedWeights {
  const parts: Uint8Array[] = [];
  const specs: tf.io.WeightsManifestEntry[] = [];
  let offset = 0;
  for (const spec of weightSpecs) {
    if (spec.quantization) throw new Error(`weight ${spec.name} is already quantised (${spec.quantization.dtype})`);
    const bytesPer = BYTES_PER_VALUE[spec.dtype];
    if (bytesPer === undefined) throw new Error(`weight ${spec.name} has dtype ${spec.dtype}, which export cannot quantise`);
    const count = valueCount(spec.shape);
    const byteLength = count * bytesPer;
    if (offset + byteLength > weightData.byteLength) throw new Error(`weight data ends before weight ${spec.name}`);
    const raw = weightData.slice(offset, offset + byteLength);
    offset += byteLength;
    if (spec.dtype !== 'float32') {
      parts.push(new Uint8Array(raw));
      specs.push({ ...spec });
      continue;
    }
    const values = new Float32Array(raw);
    if (dtype === 'uint8') {
      const q = quantizeUint8(values);
      parts.push(q.data);
      specs.push({ ...spec, quantization: { dtype: 'uint8', scale: q.scale, min: q.min } });
    } else {
      const half = quantizeFloat16(values);
      parts.push(new Uint8Array(half.buffer));
      specs.push({ ...spec, quantization: { dtype: 'float16' } });
    }
  }
  if (offset !== weightData.byteLength) throw new Error(`weight data has ${weightData.byteLength - offset} bytes beyond the manifest`);
  const total = parts.reduce((n, p) => n + p.byteLength, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return { weightSpecs: specs, weightData: out.buffer };
}
