// @ts-check
/**
 * MNIST-style preprocessing, shared verbatim by the server (Node imports this file) and the drawing page (the
 * browser imports it from /preprocess.js), so that one drawing gives one 28×28 input wherever it is computed.
 * Plain JavaScript on purpose: the browser cannot import TypeScript. Pure functions over plain arrays; all
 * arithmetic is IEEE double with a fixed operation order, so Node and browsers produce identical float32 results.
 *
 * The algorithm (LeCun et al.'s description of how MNIST was made):
 *  1. gray = luminance × alpha, i.e. the image composited over black, in 0..1 (rgbaToGray);
 *  2. if the mean gray is > 0.5 the image is taken to be dark ink on a light background and inverted, since MNIST
 *     digits are white on black (invertIfLight);
 *  3. crop to the bounding box of pixels > 0; scale it (area averaging) so the longer side is 20 px, keeping the
 *     aspect ratio; paste it into a black 28×28 image so that its centre of mass lands on the centre (14, 14),
 *     rounded to whole pixels (centreDigit). An image with no ink becomes all black;
 *  4. normalise each pixel p in 0..1 to (p − 0.1307) / 0.3081, the training normalisation (normalise).
 */

export const MNIST_MEAN = 0.1307;
export const MNIST_STD = 0.3081;
export const SIDE = 28;
export const BOX = 20;

/**
 * @param {ArrayLike<number>} rgba width×height×4 bytes (0..255), row-major
 * @param {number} width
 * @param {number} height
 * @returns {Float32Array} width×height gray values in 0..1
 */
export function rgbaToGray(rgba, width, height) {
  const n = width * height;
  if (rgba.length !== n * 4) throw new RangeError(`rgbaToGray: ${rgba.length} bytes is not ${width}×${height}×4`);
  const gray = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const lum = 0.299 * rgba[4 * i] + 0.587 * rgba[4 * i + 1] + 0.114 * rgba[4 * i + 2];
    gray[i] = (lum / 255) * (rgba[4 * i + 3] / 255);
  }
  return gray;
}

/**
 * @param {Float32Array} gray values in 0..1
 * @returns {Float32Array} `gray` itself, or 1 − gray when its mean is above 0.5
 */
export function invertIfLight(gray) {
  let sum = 0;
  for (let i = 0; i < gray.length; i++) sum += gray[i];
  if (gray.length === 0 || sum / gray.length <= 0.5) return gray;
  const out = new Float32Array(gray.length);
  for (let i = 0; i < gray.length; i++) out[i] = 1 - gray[i];
  return out;
}

/**
 * Area-averaging resize along one axis at a time (a box filter with fractional coverage at the edges).
 * @param {Float32Array} src sw×sh
 * @param {number} sw
 * @param {number} sh
 * @param {number} dw
 * @param {number} dh
 * @returns {Float32Array} dw×dh
 */
export function resizeArea(src, sw, sh, dw, dh) {
  const tmp = new Float64Array(dw * sh);
  const sx = sw / dw;
  for (let x = 0; x < dw; x++) {
    const x0 = x * sx;
    const x1 = (x + 1) * sx;
    for (let y = 0; y < sh; y++) {
      let acc = 0;
      for (let i = Math.floor(x0); i < Math.min(sw, Math.ceil(x1)); i++) {
        acc += (Math.min(x1, i + 1) - Math.max(x0, i)) * src[y * sw + i];
      }
      tmp[y * dw + x] = acc / sx;
    }
  }
  const out = new Float32Array(dw * dh);
  const sy = sh / dh;
  for (let y = 0; y < dh; y++) {
    const y0 = y * sy;
    const y1 = (y + 1) * sy;
    for (let x = 0; x < dw; x++) {
      let acc = 0;
      for (let j = Math.floor(y0); j < Math.min(sh, Math.ceil(y1)); j++) {
        acc += (Math.min(y1, j + 1) - Math.max(y0, j)) * tmp[j * dw + x];
      }
      out[y * dw + x] = Math.min(1, Math.max(0, acc / sy));
    }
  }
  return out;
}

/**
 * Steps 3 of the algorithm: bounding box, scale longer side to 20 px, centre of mass to the centre of 28×28.
 * @param {Float32Array} gray width×height, ink bright (0..1) on black
 * @param {number} width
 * @param {number} height
 * @returns {Float32Array} 784 values in 0..1
 */
export function centreDigit(gray, width, height) {
  const out = new Float32Array(SIDE * SIDE);
  let top = height, bottom = -1, left = width, right = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (gray[y * width + x] > 0) {
        if (y < top) top = y;
        if (y > bottom) bottom = y;
        if (x < left) left = x;
        if (x > right) right = x;
      }
    }
  }
  if (bottom < 0) return out;
  const cw = right - left + 1;
  const ch = bottom - top + 1;
  const crop = new Float32Array(cw * ch);
  for (let y = 0; y < ch; y++) for (let x = 0; x < cw; x++) crop[y * cw + x] = gray[(top + y) * width + left + x];
  const scale = BOX / Math.max(cw, ch);
  const dw = Math.max(1, Math.round(cw * scale));
  const dh = Math.max(1, Math.round(ch * scale));
  const digit = resizeArea(crop, cw, ch, dw, dh);
  let mass = 0, mx = 0, my = 0;
  for (let y = 0; y < dh; y++) {
    for (let x = 0; x < dw; x++) {
      const v = digit[y * dw + x];
      mass += v;
      mx += v * (x + 0.5);
      my += v * (y + 0.5);
    }
  }
  const ox = mass > 0 ? Math.round(SIDE / 2 - mx / mass) : Math.round((SIDE - dw) / 2);
  const oy = mass > 0 ? Math.round(SIDE / 2 - my / mass) : Math.round((SIDE - dh) / 2);
  for (let y = 0; y < dh; y++) {
    const ty = y + oy;
    if (ty < 0 || ty >= SIDE) continue;
    for (let x = 0; x < dw; x++) {
      const tx = x + ox;
      if (tx >= 0 && tx < SIDE) out[ty * SIDE + tx] = digit[y * dw + x];
    }
  }
  return out;
}

/**
 * Steps 1–3 for an RGBA image of any size (a canvas's ImageData or a decoded PNG).
 * @param {ArrayLike<number>} rgba
 * @param {number} width
 * @param {number} height
 * @returns {Float32Array} 784 values in 0..1
 */
export function preprocessRgba(rgba, width, height) {
  return centreDigit(invertIfLight(rgbaToGray(rgba, width, height)), width, height);
}

/**
 * Step 4: the training normalisation.
 * @param {ArrayLike<number>} pixels values in 0..1
 * @returns {Float32Array}
 */
export function normalise(pixels) {
  const out = new Float32Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) out[i] = (pixels[i] - MNIST_MEAN) / MNIST_STD;
  return out;
}
