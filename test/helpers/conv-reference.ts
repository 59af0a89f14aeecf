/**
 * Direct float64 definitions of NHWC conv2d and its two gradients, written from the definition with no shared code
 * with the kernels under test. Used where no tfjs backend can serve as reference (dilated gradients) and for
 * finite-difference checks.
 */
export interface RefConv {
  b: number; h: number; w: number; cin: number; cout: number; kh: number; kw: number;
  sh: number; sw: number; dh: number; dw: number; pad: 'same' | 'valid';
}

export function outDims(c: RefConv): { oh: number; ow: number; pt: number; pl: number } {
  const ekh = (c.kh - 1) * c.dh + 1;
  const ekw = (c.kw - 1) * c.dw + 1;
  if (c.pad === 'valid') return { oh: Math.ceil((c.h - ekh + 1) / c.sh), ow: Math.ceil((c.w - ekw + 1) / c.sw), pt: 0, pl: 0 };
  const oh = Math.ceil(c.h / c.sh);
  const ow = Math.ceil(c.w / c.sw);
  const padH = Math.max(0, (oh - 1) * c.sh + ekh - c.h);
  const padW = Math.max(0, (ow - 1) * c.sw + ekw - c.w);
  return { oh, ow, pt: Math.floor(padH / 2), pl: Math.floor(padW / 2) };
}

function forEachTap(c: RefConv, fn: (xi: number, wi: number, yi: number) => void): void {
  const { oh, ow, pt, pl } = outDims(c);
  for (let b = 0; b < c.b; b++) for (let y = 0; y < oh; y++) for (let x = 0; x < ow; x++) {
    for (let i = 0; i < c.kh; i++) for (let j = 0; j < c.kw; j++) {
      const ih = y * c.sh + i * c.dh - pt;
      const iw = x * c.sw + j * c.dw - pl;
      if (ih < 0 || ih >= c.h || iw < 0 || iw >= c.w) continue;
      for (let ci = 0; ci < c.cin; ci++) for (let co = 0; co < c.cout; co++) {
        fn(((b * c.h + ih) * c.w + iw) * c.cin + ci, ((i * c.kw + j) * c.cin + ci) * c.cout + co, ((b * oh + y) * ow + x) * c.cout + co);
      }
    }
  }
}

export function convForward(c: RefConv, x: ArrayLike<number>, w: ArrayLike<number>): Float64Array {
  const { oh, ow } = outDims(c);
  const y = new Float64Array(c.b * oh * ow * c.cout);
  forEachTap(c, (xi, wi, yi) => { y[yi]! += x[xi]! * w[wi]!; });
  return y;
}

export function convGradFilter(c: RefConv, x: ArrayLike<number>, dy: ArrayLike<number>): Float64Array {
  const dw = new Float64Array(c.kh * c.kw * c.cin * c.cout);
  forEachTap(c, (xi, wi, yi) => { dw[wi]! += x[xi]! * dy[yi]!; });
  return dw;
}

export function convGradInput(c: RefConv, w: ArrayLike<number>, dy: ArrayLike<number>): Float64Array {
  const dx = new Float64Array(c.b * c.h * c.w * c.cin);
  forEachTap(c, (xi, wi, yi) => { dx[xi]! += w[wi]! * dy[yi]!; });
  return dx;
}

/** max |a − b| / max |b|: the relative error used by the kernel tests. */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 1e-12;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / den;
}
