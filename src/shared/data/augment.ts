import { IMAGE_COLS, IMAGE_ROWS, NORMALISED_BACKGROUND } from './mnist.js';
import type { Rng } from './rng.js';

export interface AugmentOptions {
  /** Maximum translation in whole pixels along each axis; each image gets an integer shift in [−maxShift, maxShift]. */
  maxShift?: number;
  /** Maximum rotation in degrees; each image gets a uniform angle in [−maxRotationDeg, maxRotationDeg]. */
  maxRotationDeg?: number;
  rows?: number;
  cols?: number;
  /**
   * Value for pixels that come in from outside the image. Default: the normalised value of a black pixel, which
   * matches gatherBatch output; pass 0 for raw or [0,1]-scaled images.
   */
  fill?: number;
}

export const DEFAULT_AUGMENT = { maxShift: 2, maxRotationDeg: 10 } as const;

/**
 * Writes into dst the image src rotated by `angleRad` about the image centre (positive = clockwise as displayed,
 * rows running top to bottom) and then translated by (dx, dy) pixels (+x right, +y down), with bilinear sampling.
 * Each output pixel pulls from the inverse-mapped source point. src and dst must not overlap.
 */
export function transformImage(
  src: Float32Array,
  dst: Float32Array,
  rows: number,
  cols: number,
  dx: number,
  dy: number,
  angleRad: number,
  fill: number,
): void {
  const cos = Math.cos(angleRad);
  const sin = Math.sin(angleRad);
  const cx = (cols - 1) / 2;
  const cy = (rows - 1) / 2;
  const maxX = cols - 1;
  const maxY = rows - 1;
  for (let y = 0; y < rows; y++) {
    const v = y - cy - dy;
    const u0 = -cx - dx;
    // Source point for output (x, y): sx = cos·u + sin·v + cx, sy = −sin·u + cos·v + cy, with u = u0 + x.
    const sxRow = cos * u0 + sin * v + cx;
    const syRow = -sin * u0 + cos * v + cy;
    const rowOut = y * cols;
    for (let x = 0; x < cols; x++) {
      const sx = sxRow + cos * x;
      const sy = syRow - sin * x;
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      if (x0 < -1 || x0 > maxX || y0 < -1 || y0 > maxY) {
        dst[rowOut + x] = fill;
        continue;
      }
      const fx = sx - x0;
      const fy = sy - y0;
      let p00: number, p01: number, p10: number, p11: number;
      if (x0 >= 0 && x0 < maxX && y0 >= 0 && y0 < maxY) {
        const i = y0 * cols + x0;
        p00 = src[i]!;
        p01 = src[i + 1]!;
        p10 = src[i + cols]!;
        p11 = src[i + cols + 1]!;
      } else {
        const inX0 = x0 >= 0;
        const inX1 = x0 + 1 <= maxX;
        const inY0 = y0 >= 0;
        const inY1 = y0 + 1 <= maxY;
        const r0 = y0 * cols;
        const r1 = r0 + cols;
        p00 = inX0 && inY0 ? src[r0 + x0]! : fill;
        p01 = inX1 && inY0 ? src[r0 + x0 + 1]! : fill;
        p10 = inX0 && inY1 ? src[r1 + x0]! : fill;
        p11 = inX1 && inY1 ? src[r1 + x0 + 1]! : fill;
      }
      const top = p00 + (p01 - p00) * fx;
      const bottom = p10 + (p11 - p10) * fx;
      dst[rowOut + x] = top + (bottom - top) * fy;
    }
  }
}

/**
 * Augments `count` images stored back to back in `x`, in place. Consumes exactly three draws from `rng` per image
 * (dx, dy, angle) whatever the options, so how far the stream advances depends only on `count`. Training seeds a
 * fresh `rng` per step from deriveSeed(seed, epoch, step, rank): a resumed run augments each step as before.
 */
export function augmentBatch(x: Float32Array, count: number, rng: Rng, options: AugmentOptions = {}): void {
  const rows = options.rows ?? IMAGE_ROWS;
  const cols = options.cols ?? IMAGE_COLS;
  const maxShift = options.maxShift ?? DEFAULT_AUGMENT.maxShift;
  const maxAngle = ((options.maxRotationDeg ?? DEFAULT_AUGMENT.maxRotationDeg) * Math.PI) / 180;
  const fill = options.fill ?? NORMALISED_BACKGROUND;
  const pixels = rows * cols;
  if (!Number.isInteger(maxShift) || maxShift < 0) throw new RangeError(`augmentBatch: maxShift must be a whole number >= 0, got ${maxShift}`);
  if (x.length < count * pixels) throw new RangeError(`augmentBatch: ${x.length} floats cannot hold ${count} images of ${rows}×${cols}`);
  const scratch = new Float32Array(pixels);
  for (let b = 0; b < count; b++) {
    const dx = rng.nextInt(2 * maxShift + 1) - maxShift;
    const dy = rng.nextInt(2 * maxShift + 1) - maxShift;
    const angle = (rng.nextFloat() * 2 - 1) * maxAngle;
    if (dx === 0 && dy === 0 && angle === 0) continue;
    const image = x.subarray(b * pixels, (b + 1) * pixels);
    scratch.set(image);
    transformImage(scratch, image, rows, cols, dx, dy, angle, fill);
  }
}
