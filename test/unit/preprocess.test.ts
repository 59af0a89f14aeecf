import { describe, expect, it } from 'vitest';
import { loadMnist } from '../../src/shared/data/mnist.js';
import { NORMALISE_LUT } from '../../src/shared/data/mnist.js';
import { centreDigit, normalise, preprocessRgba, resizeArea } from '../../src/serve/preprocess.js';

/** RGBA of a gray image (0..255), optionally upscaled by pixel replication and/or inverted. */
function rgba(gray: ArrayLike<number>, width: number, height: number, { scale = 1, invert = false } = {}): Uint8Array {
  const w = width * scale;
  const h = height * scale;
  const out = new Uint8Array(w * h * 4);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const v = gray[Math.floor(y / scale) * width + Math.floor(x / scale)]!;
      const g = invert ? 255 - v : v;
      out.set([g, g, g, 255], 4 * (y * w + x));
    }
  }
  return out;
}

function bbox(pixels: Float32Array): { top: number; bottom: number; left: number; right: number } {
  const box = { top: 28, bottom: -1, left: 28, right: -1 };
  for (let y = 0; y < 28; y++) for (let x = 0; x < 28; x++) {
    if (pixels[y * 28 + x]! > 0) {
      box.top = Math.min(box.top, y); box.bottom = Math.max(box.bottom, y);
      box.left = Math.min(box.left, x); box.right = Math.max(box.right, x);
    }
  }
  return box;
}

/** Whether `pixels` equals `image`/255 translated by some (dx, dy) with |dx|, |dy| ≤ maxShift. */
function shiftedMatch(pixels: Float32Array, image: Uint8Array, maxShift: number): boolean {
  for (let dy = -maxShift; dy <= maxShift; dy++) {
    for (let dx = -maxShift; dx <= maxShift; dx++) {
      let same = true;
      for (let y = 0; y < 28 && same; y++) {
        for (let x = 0; x < 28 && same; x++) {
          const sx = x - dx;
          const sy = y - dy;
          const v = sx >= 0 && sx < 28 && sy >= 0 && sy < 28 ? image[sy * 28 + sx]! / 255 : 0;
          same = Math.abs(pixels[y * 28 + x]! - v) < 1e-6;
        }
      }
      if (same) return true;
    }
  }
  return false;
}

describe('MNIST-style preprocessing (src/serve/preprocess.js)', () => {
  it('an image without ink becomes all black', () => {
    expect(Array.from(preprocessRgba(new Uint8Array(50 * 40 * 4), 50, 40)).every((v) => v === 0)).toBe(true);
  });

  it('scales the longer side to 20 px keeping the aspect ratio and centres the mass', () => {
    const gray = new Float32Array(200 * 120);
    for (let y = 10; y < 110; y++) for (let x = 40; x < 90; x++) gray[y * 200 + x] = 1; // 50 wide × 100 tall
    const out = centreDigit(gray, 200, 120);
    expect(bbox(out)).toEqual({ top: 4, bottom: 23, left: 9, right: 18 }); // 10 × 20, centre (14, 14)
    expect(out[14 * 28 + 14]).toBe(1);
  });

  it('area resizing preserves the mean and is the identity at scale 1', () => {
    const src = Float32Array.from({ length: 30 * 18 }, (_, i) => ((i * 37) % 101) / 100);
    const mean = (a: Float32Array): number => a.reduce((s, v) => s + v, 0) / a.length;
    expect(mean(resizeArea(src, 30, 18, 20, 12))).toBeCloseTo(mean(src), 5);
    expect(Array.from(resizeArea(src, 30, 18, 30, 18))).toEqual(Array.from(src));
  });

  it('leaves MNIST test digits unchanged up to a one-pixel shift (they were made this way) and is exact under integer upscaling', () => {
    const { test } = loadMnist();
    let unchanged = 0;
    for (let i = 0; i < 50; i++) {
      const image = test.images.subarray(i * 784, (i + 1) * 784);
      const once = preprocessRgba(rgba(image, 28, 28), 28, 28);
      const box = bbox(once);
      expect(Math.max(box.bottom - box.top, box.right - box.left) + 1).toBe(20);
      // MNIST computed its centre of mass before its own rounding: allow the same digit moved by one pixel.
      if (shiftedMatch(once, image, 1)) unchanged++;
      // 3× pixel replication then area averaging back to 20 px gives the same digit.
      const big = preprocessRgba(rgba(image, 28, 28, { scale: 3 }), 84, 84);
      for (let p = 0; p < 784; p++) expect(Math.abs(big[p]! - once[p]!)).toBeLessThan(1e-5);
      // Dark ink on a light background (mean > 0.5) is inverted first.
      const inverted = preprocessRgba(rgba(image, 28, 28, { invert: true }), 28, 28);
      for (let p = 0; p < 784; p++) expect(Math.abs(inverted[p]! - once[p]!)).toBeLessThan(1e-6);
    }
    expect(unchanged).toBe(50);
  });

  it('normalises exactly as training does', () => {
    const bytes = Array.from({ length: 256 }, (_, v) => v);
    expect(Array.from(normalise(bytes.map((v) => v / 255)))).toEqual(Array.from(NORMALISE_LUT));
  });
});
