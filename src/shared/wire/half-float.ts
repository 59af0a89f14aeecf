/**
 * The 16-bit float formats a compressed ring puts on the wire (--compress, issue #16): IEEE 754 binary16 (`fp16`) and
 * bfloat16 (`bf16`, the upper half of a float32). Conversions work on the bits through typed-array views, one pass
 * per array and no allocation per element: they run on every chunk of every all-reduce.
 *
 * Rounding is to nearest, ties to even, from the float32 bits. NaN stays NaN (quiet) and ±Infinity stays ±Infinity,
 * so a non-finite gradient still reaches the NaN guard downstream. A finite value never becomes infinite: beyond the
 * largest finite 16-bit value it saturates there (fp16: ±65504; bf16: ±0x7F7F ≈ ±3.39e38, reached only by float32
 * values within half a bf16 step of float32's maximum), and error feedback (worker/ring/chunk-compressor.ts) carries
 * the difference. Decoding is exact: every 16-bit value is a float32, so encoding a decoded value gives it back.
 */

export const COMPRESS_MODES = ['none', 'fp16', 'bf16'] as const;
export type CompressMode = (typeof COMPRESS_MODES)[number];
export type HalfFormat = Exclude<CompressMode, 'none'>;

export const FP16_MAX = 65504;

/**
 * Unit roundoff of each format: a value that neither saturates nor falls into fp16's subnormal range is off by at
 * most this fraction of itself after a round trip (half an ulp: 2^-11 with fp16's 11 significant bits, 2^-8 with
 * bf16's 8).
 */
export const UNIT_ROUNDOFF: Readonly<Record<HalfFormat, number>> = { fp16: 2 ** -11, bf16: 2 ** -8 };

/** The fp16 bits nearest to the float32 with bits `x` (an unsigned 32-bit integer). */
export function fp16FromFloat32Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const abs = x & 0x7fffffff;
  if (abs >= 0x7f800000) return abs === 0x7f800000 ? sign | 0x7c00 : sign | 0x7e00 | ((abs >>> 13) & 0x3ff);
  if (abs > 0x477fe000) return sign | 0x7bff; // above 65504: saturate
  if (abs >= 0x38800000) {
    // Normal in fp16 (≥ 2^-14): rebias the exponent (127 → 15), then drop 13 mantissa bits, ties to even. A carry out
    // of the mantissa correctly bumps the exponent.
    const m = abs - 0x38000000;
    return sign | ((m + 0x0fff + ((m >>> 13) & 1)) >>> 13);
  }
  if (abs <= 0x33000000) return sign; // at most 2^-25, half the smallest subnormal: rounds to zero (a tie at 2^-25)
  // Subnormal in fp16: the value in units of 2^-24 is the 24-bit significand shifted right by 14..24 bits.
  const significand = (abs & 0x7fffff) | 0x800000;
  const shift = 126 - (abs >>> 23);
  const q = significand >>> shift;
  const rest = significand & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return sign | (rest > half || (rest === half && (q & 1) === 1) ? q + 1 : q);
}

/** The bf16 bits nearest to the float32 with bits `x` (an unsigned 32-bit integer). */
export function bf16FromFloat32Bits(x: number): number {
  const abs = x & 0x7fffffff;
  if (abs > 0x7f800000) return (x >>> 16) | 0x0040; // NaN: keep the sign and top payload bits, set the quiet bit
  if (abs >= 0x7f7f8000) return abs === 0x7f800000 ? x >>> 16 : ((x >>> 16) & 0x8000) | 0x7f7f; // ±Inf; saturate
  return (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
}

/**
 * float32 bits of every fp16 value, by its bits: decoding is one lookup. Built on first use (256 KiB and a 65 536-step
 * loop), not when config.ts imports COMPRESS_MODES at every start of the CLI.
 */
function buildFp16Table(): Uint32Array {
  const table = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exponent = (h >>> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    if (exponent === 0x1f) table[h] = sign | 0x7f800000 | (mantissa << 13);
    else if (exponent > 0) table[h] = sign | ((exponent + 112) << 23) | (mantissa << 13);
    else if (mantissa === 0) table[h] = sign;
    else {
      // Subnormal: mantissa · 2^-24, normalised for float32.
      let e = 113;
      let m = mantissa;
      while ((m & 0x400) === 0) {
        m <<= 1;
        e--;
      }
      table[h] = sign | (e << 23) | ((m & 0x3ff) << 13);
    }
  }
  return table;
}

interface DecodeTables {
  fp16Bits: Uint32Array;
  /** The same values as floats, for the error of one encoding (a NaN read through a float loses its payload: fine there). */
  fp16: Float32Array;
  bf16: Float32Array;
}
let decodeTables: DecodeTables | undefined;

function tables(): DecodeTables {
  if (!decodeTables) {
    const fp16Bits = buildFp16Table();
    const bf16Bits = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) bf16Bits[h] = h << 16;
    decodeTables = { fp16Bits, fp16: new Float32Array(fp16Bits.buffer), bf16: new Float32Array(bf16Bits.buffer) };
  }
  return decodeTables;
}

function bitsOf(values: Float32Array): Uint32Array {
  return new Uint32Array(values.buffer, values.byteOffset, values.length);
}

/** dst[i] = the 16-bit encoding of src[i] (same lengths). */
export function encodeHalves(format: HalfFormat, src: Float32Array, dst: Uint16Array): void {
  const bits = bitsOf(src);
  const n = src.length;
  if (format === 'fp16') for (let i = 0; i < n; i++) dst[i] = fp16FromFloat32Bits(bits[i]!);
  else for (let i = 0; i < n; i++) dst[i] = bf16FromFloat32Bits(bits[i]!);
}

/** dst[i] = the float32 that src[i] encodes, bit-exact (same lengths). */
export function decodeHalves(format: HalfFormat, src: Uint16Array, dst: Float32Array): void {
  const out = bitsOf(dst);
  const n = src.length;
  const { fp16Bits } = tables();
  if (format === 'fp16') for (let i = 0; i < n; i++) out[i] = fp16Bits[src[i]!]!;
  else for (let i = 0; i < n; i++) out[i] = src[i]! << 16;
}

/**
 * encodeHalves, and in the same pass residual[i] += src[i] − decoded(dst[i]): what the encoding lost, for error
 * feedback. A non-finite value adds nothing (its error is not a number; the step fails on it downstream anyway). With
 * `writeBack`, src[i] becomes the decoded value (bit-exact), so the caller holds what every receiver decodes.
 */
export function encodeHalvesWithError(format: HalfFormat, src: Float32Array, dst: Uint16Array, residual: Float32Array, writeBack: boolean): void {
  const bits = bitsOf(src);
  const n = src.length;
  const { fp16Bits, fp16, bf16 } = tables();
  // One loop per format: no format test per element.
  if (format === 'fp16') {
    for (let i = 0; i < n; i++) {
      const h = fp16FromFloat32Bits(bits[i]!);
      dst[i] = h;
      const error = src[i]! - fp16[h]!;
      if (error === error) residual[i] = residual[i]! + error; // false only for NaN: a NaN or infinite value
      if (writeBack) bits[i] = fp16Bits[h]!;
    }
  } else {
    for (let i = 0; i < n; i++) {
      const h = bf16FromFloat32Bits(bits[i]!);
      dst[i] = h;
      const error = src[i]! - bf16[h]!;
      if (error === error) residual[i] = residual[i]! + error;
      if (writeBack) bits[i] = h << 16;
    }
  }
}

