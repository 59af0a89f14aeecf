import { MnistDdpError } from '../../shared/core/errors.js';
import { kernelsModule } from '../../shared/kernels/module.js';

/**
 * target[i] += source[i] for the ring's reduce-scatter, with WebAssembly SIMD (f32x4.add). IEEE-754 float32
 * addition is exact-rounded in both JS (double add, then rounding to float32: double has enough precision for that
 * to equal a float32 add) and WebAssembly, so the sums are bit-identical to the plain JS loop.
 *
 * The SIMD add is faster than the JS loop, but copying operands in and out of the module's memory costs more than
 * the add itself. So the ring keeps what it can inside the module's memory: the gradient buffer itself when the
 * caller took it from `RingAllReducer.allocate` (SumArena.home), and its all-gather staging (SumArena.staging). With
 * the buffer at home a received chunk is copied once (into the scratch) instead of three times.
 *
 * The adds are add_f32 / add_f32_out of native/kernels.c (the module the wasm training kernels use), instantiated
 * here on a memory of its own.
 */

const PAGE_BYTES = 65_536;
/** Sums run through the scratch in blocks of this many floats, so the scratch is 256 KiB whatever the chunk size. */
const BLOCK_FLOATS = 32 * 1024;

type AddF32 = (dst: number, src: number, n: number) => void;
type AddF32Out = (dst: number, src: number, out: number, n: number) => void;

/**
 * A WebAssembly memory laid out as [home | staging 0 | staging 1 | scratch]: `home` (homeFloats) for the caller's
 * buffer, two staging regions (stagingFloats each) the ring sends its all-gather frames from, alternating by step,
 * and the scratch the SIMD add reads its addend from.
 *
 * The memory never grows: growing would move it while ZeroMQ may still be sending from it. Its size is fixed at
 * construction (at most 4 GiB in wasm32).
 */
export class SumArena {
  readonly home: Float32Array;
  readonly staging: readonly [Float32Array, Float32Array];
  private readonly memory: WebAssembly.Memory;
  private readonly addF32: AddF32;
  private readonly addF32Out: AddF32Out;
  /** The two scratch blocks (the running sum and the addend), viewed once: the memory never grows. */
  private readonly sumBlock: Float32Array;
  private readonly addendBlock: Float32Array;
  private stagingTurn: 0 | 1 = 1;

  constructor(homeFloats: number, stagingFloats: number) {
    const stagingAt = 4 * homeFloats;
    const sumAt = stagingAt + 8 * stagingFloats;
    const addendAt = sumAt + 4 * BLOCK_FLOATS;
    this.memory = new WebAssembly.Memory({ initial: Math.ceil((addendAt + 4 * BLOCK_FLOATS) / PAGE_BYTES) });
    const kernels = new WebAssembly.Instance(kernelsModule(), { env: { memory: this.memory } }).exports;
    this.addF32 = kernels.add_f32 as AddF32;
    this.addF32Out = kernels.add_f32_out as AddF32Out;
    const buffer = this.memory.buffer;
    this.home = new Float32Array(buffer, 0, homeFloats);
    this.staging = [new Float32Array(buffer, stagingAt, stagingFloats), new Float32Array(buffer, stagingAt + 4 * stagingFloats, stagingFloats)];
    this.sumBlock = new Float32Array(buffer, sumAt, BLOCK_FLOATS);
    this.addendBlock = new Float32Array(buffer, addendAt, BLOCK_FLOATS);
  }

  /** The staging region for the next step: the two alternate, so a region is written again two steps later. */
  nextStaging(): Float32Array {
    this.stagingTurn = this.stagingTurn === 0 ? 1 : 0;
    return this.staging[this.stagingTurn];
  }

  /** Whether `view` lies in this arena's memory (then sums into it are made in place). */
  holds(view: Float32Array): boolean {
    return view.buffer === this.memory.buffer;
  }

  /**
   * target += source, elementwise (same lengths; INVARIANT_VIOLATED otherwise: the ring checks lengths first). With `out` (a view of this arena's memory, target's length, not
   * overlapping target) the sum is also left in `out`. A target in this arena's memory is summed in place; any other
   * goes through the scratch. `source` is copied into the scratch first, so it may be anything. Synchronous.
   */
  sumInto(target: Float32Array, source: Float32Array, out?: Float32Array): void {
    const n = target.length;
    if (source.length !== n) throw invariant(`sumInto: lengths differ (${n} vs ${source.length})`);
    if (out !== undefined && (!this.holds(out) || out.length !== n)) {
      throw invariant(`sumInto: out must be a view of this arena's memory with ${n} floats`);
    }
    if (out !== undefined && n > 0 && target.buffer === out.buffer && target.byteOffset < out.byteOffset + out.byteLength && out.byteOffset < target.byteOffset + target.byteLength) {
      throw invariant('sumInto: out must not overlap target');
    }
    const inPlace = this.holds(target);
    for (let from = 0; from < n; from += BLOCK_FLOATS) {
      const length = Math.min(BLOCK_FLOATS, n - from);
      this.addendBlock.set(source.subarray(from, from + length));
      const addend = this.addendBlock.byteOffset;
      if (inPlace) {
        const at = target.byteOffset + 4 * from;
        if (out) this.addF32Out(at, addend, out.byteOffset + 4 * from, length);
        else this.addF32(at, addend, length);
        continue;
      }
      const sum = out?.subarray(from, from + length) ?? this.sumBlock.subarray(0, length);
      sum.set(target.subarray(from, from + length));
      this.addF32(sum.byteOffset, addend, length);
      target.set(sum, from);
    }
  }
}

function invariant(message: string): MnistDdpError {
  return new MnistDdpError('INVARIANT_VIOLATED', message);
}
