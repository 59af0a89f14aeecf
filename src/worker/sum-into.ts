import { kernelsModule } from '../shared/wasm/kernels_module.js';

/**
 * target[i] += source[i] for the ring's reduce-scatter, with WebAssembly SIMD (f32x4.add). IEEE-754 float32
 * addition is exact-rounded in both JS (double add, then rounding to float32: double has enough precision for that
 * to equal a float32 add) and WebAssembly, so the sums are bit-identical to the plain JS loop.
 *
 * Why: on a 1 MiB chunk the plain JS loop takes 0.48–0.75 ms p50 and this 0.15–0.24 ms (two runs of 200 sums,
 * warm caches), copies in and out of the module's memory included. The copies are a large part of that, so the ring
 * keeps its all-gather staging inside the module's memory (SumArena.region) and the add writes each completed sum
 * there.
 *
 * The add is add_f32 of native/kernels.c (the module the wasm training kernels use), instantiated here on a
 * memory of its own.
 */

const PAGE_BYTES = 65_536;
/** Sums run through the scratch in blocks of this many floats, so the scratch is 256 KiB whatever the chunk size. */
const BLOCK_FLOATS = 32 * 1024;

type AddF32 = (dst: number, src: number, n: number) => void;

/**
 * A WebAssembly memory with a region of `regionFloats` floats that the caller owns (the ring sends its all-gather
 * frames from it) followed by the scratch the SIMD add works in. Summing with the output in the region leaves the
 * sum where it is sent from, so it is not copied there afterwards.
 *
 * The memory never grows: growing would move it while ZeroMQ may still be sending from the region. Its size is
 * fixed at construction (the region plus 256 KiB; at most 4 GiB in wasm32).
 */
export class SumArena {
  readonly region: Float32Array;
  private readonly memory: WebAssembly.Memory;
  private readonly addF32: AddF32;
  /** The two scratch blocks (the running sum and the addend), viewed once: the memory never grows. */
  private readonly sumBlock: Float32Array;
  private readonly addendBlock: Float32Array;

  constructor(regionFloats: number) {
    const sumAt = 4 * regionFloats;
    const addendAt = sumAt + 4 * BLOCK_FLOATS;
    this.memory = new WebAssembly.Memory({ initial: Math.ceil((addendAt + 4 * BLOCK_FLOATS) / PAGE_BYTES) });
    this.addF32 = new WebAssembly.Instance(kernelsModule(), { env: { memory: this.memory } }).exports.add_f32 as AddF32;
    this.region = new Float32Array(this.memory.buffer, 0, regionFloats);
    this.sumBlock = new Float32Array(this.memory.buffer, sumAt, BLOCK_FLOATS);
    this.addendBlock = new Float32Array(this.memory.buffer, addendAt, BLOCK_FLOATS);
  }

  /**
   * target += source, elementwise (same lengths). With `out` (a view into `region`, target's length) the sum is
   * also left in `out`; without it, it goes through the scratch. Synchronous.
   */
  sumInto(target: Float32Array, source: Float32Array, out?: Float32Array): void {
    const n = target.length;
    if (source.length !== n) throw new RangeError(`sumInto: lengths differ (${n} vs ${source.length})`);
    if (out !== undefined && (out.buffer !== this.memory.buffer || out.length !== n)) {
      throw new RangeError(`sumInto: out must be a view of this arena's region with ${n} floats`);
    }
    for (let from = 0; from < n; from += BLOCK_FLOATS) {
      const length = Math.min(BLOCK_FLOATS, n - from);
      const sum = out?.subarray(from, from + length) ?? this.sumBlock.subarray(0, length);
      sum.set(target.subarray(from, from + length));
      this.addendBlock.set(source.subarray(from, from + length));
      this.addF32(sum.byteOffset, this.addendBlock.byteOffset, length);
      target.set(sum, from);
    }
  }
}
