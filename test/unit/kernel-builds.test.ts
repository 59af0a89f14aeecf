import { describe, expect, it } from 'vitest';
import { KERNELS_RELAXED_WASM_BASE64, KERNELS_WASM_BASE64 } from '../../src/shared/kernels/module.generated.js';
import { kernelsVariant } from '../../src/shared/kernels/module.js';
import { convForward, convGradFilter, convGradInput, outDims, relError, type RefConv } from '../helpers/conv-reference.js';
import { randomFloats } from '../helpers/random.js';

// Both embedded builds of native/*.c, each on a WebAssembly.Memory of its own: the relaxed-SIMD build every runtime
// here picks (module.ts), and the plain SIMD128 build a runtime without relaxed SIMD falls back to, which training
// never exercises on these machines. Their convolution kernels must match the float64 definitions alike.

interface Exports {
  winograd_scratch_floats(inC: number, outC: number): number;
  winograd_conv(x: number, w: number, bias: number, y: number, pooled: number, codes: number, mean: number, variance: number, scratch: number, outC: number,
    flags: number, tile: number, geometry: number): void;
  winograd_conv_grad(x: number, dy: number, pooled: number, codes: number, bnZ: number, bnCoef: number, w: number, dx: number, dw: number,
    scratch: number, outC: number, flags: number, tile: number, geometry: number): void;
  conv_direct(x: number, w: number, bias: number, y: number, pooled: number, codes: number, mean: number, variance: number, scratch: number, outC: number,
    flags: number, geometry: number): void;
  gemm_f32(a: number, b: number, c: number, m: number, k: number, n: number, aTransposed: number): void;
  batch_norm_grad_params(x: number, dy: number, pooled: number, codes: number, mean: number, variance: number, scale: number, offset: number,
    epsilon: number, relu: number, scratch: number, dScale: number, dOffset: number, coef: number, geometry: number): void;
}

interface Instance {
  exports: Exports;
  put(values: ArrayLike<number>): number;
  alloc(n: number): number;
  read(ptr: number, n: number): Float32Array;
  bytes(ptr: number, n: number): Uint8Array;
  geometry(g: number[]): number;
  /** No kernel wrote past the end of a buffer (into the canary after it). */
  intact(): boolean;
}

/** One build on its own memory, with a bump allocator over it. */
function instantiate(base64: string): Instance {
  const memory = new WebAssembly.Memory({ initial: 256 });
  const exports = new WebAssembly.Instance(new WebAssembly.Module(Buffer.from(base64, 'base64')), { env: { memory } }).exports as unknown as Exports;
  // Every buffer is followed by a 256-byte canary; `intact` says whether a kernel wrote into any of them.
  const CANARY = 64;
  const canaries: number[] = [];
  let next = 1 << 16;
  const alloc = (n: number): number => {
    const ptr = next;
    const canary = ptr + n * 4;
    next = Math.ceil((canary + CANARY * 4) / 64) * 64;
    if (next > memory.buffer.byteLength) memory.grow(Math.ceil((next - memory.buffer.byteLength) / 65536));
    new Uint32Array(memory.buffer, canary, CANARY).fill(0xdeadbeef);
    canaries.push(canary);
    return ptr;
  };
  const intact = (): boolean => canaries.every((c) => new Uint32Array(memory.buffer, c, CANARY).every((v) => v === 0xdeadbeef));
  return {
    exports,
    alloc,
    intact,
    put: (values) => {
      const ptr = alloc(values.length);
      new Float32Array(memory.buffer, ptr, values.length).set(values);
      return ptr;
    },
    read: (ptr, n) => new Float32Array(memory.buffer, ptr, n).slice(),
    bytes: (ptr, n) => new Uint8Array(memory.buffer, ptr, n).slice(),
    geometry: (g) => {
      const ptr = alloc(g.length);
      new Int32Array(memory.buffer, ptr, g.length).set(g);
      return ptr;
    },
  };
}

// Relaxed SIMD needs a V8 flag on Node 20; module.ts sets it when it picks a build.
const relaxedAvailable = kernelsVariant() === 'relaxed-simd';
const BUILDS = [['SIMD128', KERNELS_WASM_BASE64, true], ['relaxed SIMD', KERNELS_RELAXED_WASM_BASE64, relaxedAvailable]] as const;

/** A 3×3, stride-1, undilated convolution (the layers Winograd takes). */
const conv3x3 = (b: number, h: number, w: number, cin: number, cout: number, pad: 'valid' | 'same'): RefConv =>
  ({ b, h, w, cin, cout, kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, pad });

/** Each 3×3 stride-1 case with 4×4 and with 5×5 Winograd tiles: [label, case, tile]. */
const byTile = (cases: RefConv[]) =>
  cases.flatMap((c) => [4, 5].map((tile) => [`${c.h}x${c.w}x${c.cin}→${c.cout} ${c.pad}, ${tile}x${tile} tiles`, c, tile] as const));

/** The float64 mean and biased variance per channel of `y` ([rows, channels], channels last). */
function channelMoments(y: ArrayLike<number>, channels: number): { mean: Float64Array; variance: Float64Array } {
  const rows = y.length / channels;
  const mean = new Float64Array(channels), variance = new Float64Array(channels);
  for (let i = 0; i < y.length; i++) mean[i % channels]! += y[i]! / rows;
  for (let i = 0; i < y.length; i++) variance[i % channels]! += (y[i]! - mean[i % channels]!) ** 2 / rows;
  return { mean, variance };
}

/** A case's output sides, padding, and its geometry in the instance's memory (winograd.c's layout). */
function winogradGeometry(k: Instance, c: RefConv) {
  const { oh, ow, pt, pl } = outDims(c);
  return { oh, ow, g: k.geometry([c.b, c.h, c.w, c.cin, oh, ow, 3, 3, 1, 1, 1, 1, pt, pl]) };
}

describe.each(BUILDS)('the %s build of native/*.c', (_name, base64, available) => {
  // The last: 64 4-tiles or 36 5-tiles, a full block of 32 and a partial one either way (dW accumulates across blocks).
  const cases = [conv3x3(2, 13, 13, 32, 64, 'valid'), conv3x3(3, 7, 9, 8, 12, 'same'), conv3x3(4, 14, 14, 64, 64, 'same')];

  it.runIf(available).each(byTile(cases))(
    'Winograd forward (with bias and ReLU, and the output\'s moments), dx and dW (together, and each alone) match float64 within 1e-4: %s', (_label, c, tile) => {
      const k = instantiate(base64);
      const { oh, ow, g } = winogradGeometry(k, c);
      const x = randomFloats(c.b * c.h * c.w * c.cin, 1), w = randomFloats(9 * c.cin * c.cout, 2);
      const dy = randomFloats(c.b * oh * ow * c.cout, 3), bias = randomFloats(c.cout, 4);
      const [px, pw, pdy, pbias] = [k.put(x), k.put(w), k.put(dy), k.put(bias)];
      const scratch = k.alloc(k.exports.winograd_scratch_floats(c.cin, c.cout));
      const [py, pdx, pdw] = [k.alloc(dy.length), k.alloc(x.length), k.alloc(w.length)];
      const [pmean, pvariance] = [k.alloc(c.cout), k.alloc(c.cout)];
      k.exports.winograd_conv(px, pw, pbias, py, 0, 0, pmean, pvariance, scratch, c.cout, 3, tile, g);
      k.exports.winograd_conv_grad(px, pdy, 0, 0, 0, 0, pw, pdx, pdw, scratch, c.cout, 3, tile, g);
      const y = convForward(c, x, w).map((v, i) => Math.max(0, v + bias[i % c.cout]!));
      expect(relError(k.read(py, dy.length), y)).toBeLessThan(1e-4);
      const { mean, variance } = channelMoments(y, c.cout);
      expect(relError(k.read(pmean, c.cout), mean)).toBeLessThan(1e-4);
      expect(relError(k.read(pvariance, c.cout), variance)).toBeLessThan(1e-4);
      const [dx, dw] = [k.read(pdx, x.length), k.read(pdw, w.length)];
      expect(relError(dx, convGradInput(c, w, dy))).toBeLessThan(1e-4);
      expect(relError(dw, convGradFilter(c, x, dy))).toBeLessThan(1e-4);
      // Alone (flags 1: dx, 2: dW), with the pointer it does not read as 0: the same values.
      const [pdx1, pdw1] = [k.alloc(x.length), k.alloc(w.length)];
      k.exports.winograd_conv_grad(0, pdy, 0, 0, 0, 0, pw, pdx1, 0, scratch, c.cout, 1, tile, g);
      k.exports.winograd_conv_grad(px, pdy, 0, 0, 0, 0, 0, 0, pdw1, scratch, c.cout, 2, tile, g);
      expect(k.read(pdx1, x.length)).toEqual(dx);
      expect(k.read(pdw1, w.length)).toEqual(dw);
      expect(k.intact()).toBe(true);
    });

  // The gradient's other sources of dy (winograd.c dy_source): through a ReLU and a 2×2 pool (unpooled around each
  // tile; with 5-tiles the tiles cover the windows' part only, and the forward pools through staged scratch), and
  // through training-mode batch norm and a ReLU (batch norm's dz computed per tile). Odd outputs: a row and a column no
  // window reads.
  const sourceCases = [conv3x3(3, 9, 9, 8, 8, 'same'), conv3x3(2, 13, 13, 4, 8, 'valid')];
  it.runIf(available).each(byTile(sourceCases))(
    'Winograd through a pool and through batch norm: the pooled output, dx and dW match float64 within 1e-4, no buffer overrun: %s', (_label, c, tile) => {
      const k = instantiate(base64);
      const { oh, ow, g } = winogradGeometry(k, c);
      const [ph, pw] = [Math.floor(oh / 2), Math.floor(ow / 2)];
      const x = randomFloats(c.b * c.h * c.w * c.cin, 11), w = randomFloats(9 * c.cin * c.cout, 12), bias = randomFloats(c.cout, 13);
      const [px, pw_, pbias] = [k.put(x), k.put(w), k.put(bias)];
      const scratch = k.alloc(k.exports.winograd_scratch_floats(c.cin, c.cout));
      const pooledN = c.b * ph * pw * c.cout;
      const [ppooled, pcodes, staged] = [k.alloc(pooledN), k.alloc(pooledN), k.alloc(c.b * 2 * ph * 2 * pw * c.cout)];
      k.exports.winograd_conv(px, pw_, pbias, staged, ppooled, pcodes, 0, 0, scratch, c.cout, 3, tile, g);
      // float64: y = relu(conv + bias), pooled by the first maximum, dz = dy at the window's maximum where it is > 0.
      const y = convForward(c, x, w).map((v, i) => Math.max(0, v + bias[i % c.cout]!));
      const at = (b: number, r: number, s: number, ch: number): number => ((b * oh + r) * ow + s) * c.cout + ch;
      const pooledRef = new Float64Array(pooledN);
      const dyPooled = randomFloats(pooledN, 14);
      const dz = new Float64Array(y.length);
      for (let i = 0; i < pooledN; i++) {
        const ch = i % c.cout, q = Math.floor(i / c.cout), s = q % pw, r = Math.floor(q / pw) % ph, b = Math.floor(q / (pw * ph));
        const window = [at(b, 2 * r, 2 * s, ch), at(b, 2 * r, 2 * s + 1, ch), at(b, 2 * r + 1, 2 * s, ch), at(b, 2 * r + 1, 2 * s + 1, ch)];
        const best = window.reduce((m, j) => (y[j]! > y[m]! ? j : m), window[0]!);
        pooledRef[i] = y[best]!;
        if (y[best]! > 0) dz[best] = dyPooled[i]!;
      }
      expect(relError(k.read(ppooled, pooledN), pooledRef)).toBeLessThan(1e-4);
      const [pdx, pdw] = [k.alloc(x.length), k.alloc(w.length)];
      k.exports.winograd_conv_grad(px, k.put(dyPooled), ppooled, pcodes, 0, 0, pw_, pdx, pdw, scratch, c.cout, 3, tile, g);
      expect(relError(k.read(pdx, x.length), convGradInput(c, w, dz))).toBeLessThan(1e-4);
      expect(relError(k.read(pdw, w.length), convGradFilter(c, x, dz))).toBeLessThan(1e-4);

      // Batch norm (epsilon 1e-3) and a ReLU after the convolution z, without bias: its moments from the forward kernel.
      const z = convForward(c, x, w);
      const [pz, pmean, pvariance] = [k.alloc(z.length), k.alloc(c.cout), k.alloc(c.cout)];
      k.exports.winograd_conv(px, pw_, 0, pz, 0, 0, pmean, pvariance, scratch, c.cout, 0, tile, g);
      const scale = randomFloats(c.cout, 15, 0.5, 1.5), offset = randomFloats(c.cout, 16, -0.5, 0.2), dyBn = randomFloats(z.length, 17);
      const [pdScale, pdOffset, pcoef, sums] = [k.alloc(c.cout), k.alloc(c.cout), k.alloc(5 * c.cout), k.alloc(4 * c.cout)];
      const pdyBn = k.put(dyBn);
      k.exports.batch_norm_grad_params(pz, pdyBn, 0, 0, pmean, pvariance, k.put(scale), k.put(offset), 1e-3, 1, sums, pdScale, pdOffset, pcoef,
        k.geometry([c.b, oh, ow, c.cout, ph, pw, 2, 2, 2, 2, 1, 1, 0, 0]));
      // float64 batch norm dx from the kernel's own z and moments: f (g - mean(g) - (z - m) r² mean(g (z - m))).
      const [zk, m, v] = [k.read(pz, z.length), k.read(pmean, c.cout), k.read(pvariance, c.cout)];
      const rows = z.length / c.cout;
      const r = Array.from(v, (vi) => 1 / Math.sqrt(vi + 1e-3));
      const gMasked = Array.from(zk, (zi, i) => ((zi - m[i % c.cout]!) * r[i % c.cout]! * scale[i % c.cout]! + offset[i % c.cout]! > 0 ? dyBn[i]! : 0));
      const [s1, s2] = [new Float64Array(c.cout), new Float64Array(c.cout)];
      gMasked.forEach((gi, i) => { s1[i % c.cout]! += gi; s2[i % c.cout]! += gi * (zk[i]! - m[i % c.cout]!); });
      const dzBn = gMasked.map((gi, i) => {
        const ch = i % c.cout;
        return scale[ch]! * r[ch]! * (gi - s1[ch]! / rows - (zk[i]! - m[ch]!) * r[ch]! ** 2 * s2[ch]! / rows);
      });
      const [pdx2, pdw2] = [k.alloc(x.length), k.alloc(w.length)];
      k.exports.winograd_conv_grad(px, pdyBn, 0, 0, pz, pcoef, pw_, pdx2, pdw2, scratch, c.cout, 3 | 4, tile, g);
      expect(relError(k.read(pdx2, x.length), convGradInput(c, w, dzBn))).toBeLessThan(1e-4);
      expect(relError(k.read(pdw2, w.length), convGradFilter(c, x, dzBn))).toBeLessThan(1e-4);
      expect(k.intact()).toBe(true);
    });

  it.runIf(available)('the direct forward kernel (and its output\'s moments) and the GEMM match float64', () => {
    const k = instantiate(base64);
    const c: RefConv = { b: 2, h: 10, w: 9, cin: 1, cout: 32, kh: 3, kw: 3, sh: 2, sw: 1, dh: 1, dw: 1, pad: 'same' };
    const { oh, ow, pt, pl } = outDims(c);
    const x = randomFloats(c.b * c.h * c.w, 5), w = randomFloats(9 * c.cout, 6);
    const py = k.alloc(c.b * oh * ow * c.cout);
    const [pmean, pvariance, stats] = [k.alloc(c.cout), k.alloc(c.cout), k.alloc(4 * c.cout)];
    k.exports.conv_direct(k.put(x), k.put(w), 0, py, 0, 0, pmean, pvariance, stats, c.cout, 0, k.geometry([c.b, c.h, c.w, 1, oh, ow, 3, 3, 2, 1, 1, 1, pt, pl]));
    const y = convForward(c, x, w);
    expect(relError(k.read(py, c.b * oh * ow * c.cout), y)).toBeLessThan(1e-5);
    // And the moments of y per channel, folded row by row.
    const { mean, variance } = channelMoments(y, c.cout);
    expect(relError(k.read(pmean, c.cout), mean)).toBeLessThan(1e-5);
    expect(relError(k.read(pvariance, c.cout), variance)).toBeLessThan(1e-5);

    // Odd sizes (edge rows, 8-column tiles and a tail of fewer columns, K not in fours), A as stored or transposed, and
    // K past one 128-step block (the tiles accumulate); [64, 1600] · [1600, 10] is a 10-class head.
    for (const [m, kk, n, transposed] of [[37, 45, 29, 0], [37, 45, 29, 1], [64, 1600, 10, 0], [301, 9, 10, 1], [9, 300, 3, 1]] as const) {
      const a = randomFloats(m * kk, 7), b = randomFloats(kk * n, 8);
      const pc = k.alloc(m * n);
      k.exports.gemm_f32(k.put(a), k.put(b), pc, m, kk, n, transposed);
      const want = Array.from({ length: m * n }, (_, i) => {
        const [row, col] = [Math.floor(i / n), i % n];
        let s = 0;
        for (let p = 0; p < kk; p++) s += a[transposed ? p * m + row : row * kk + p]! * b[p * n + col]!;
        return s;
      });
      expect(relError(k.read(pc, m * n), want), `${m}×${kk}×${n}${transposed ? ', A transposed' : ''}`).toBeLessThan(1e-5);
    }
    expect(k.intact()).toBe(true);
  });
});
