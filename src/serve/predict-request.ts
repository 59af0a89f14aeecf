import { PNG } from 'pngjs';
import { MnistDdpError } from '../shared/core/errors.js';
import { IMAGE_PIXELS } from '../shared/data/mnist.js';
import type { Preprocess } from './assets.js';
import { checkInterlacedSize, checkPngHeader } from './png-header.js';

/**
 * Turns a POST /predict body into the 784 pixels (0..1) the model sees.
 * - `image/png`: at most MAX_PNG_SIDE (png-header.ts) on each side, checked from the header before decoding (larger
 *   is 413); any PNG colour type; composited over black, inverted when its mean is > 0.5 (black ink on white), then
 *   MNIST centring and scaling (src/serve/preprocess.js).
 * - `application/json`: `{"pixels": [784 numbers in 0..1]}`, row-major 28×28, white on black, used as is (already an
 *   MNIST-style image: no centring), so pixel/255 of an MNIST image gives exactly the training input.
 * Anything else throws a MnistDdpError with the HTTP status in details.status.
 */
export function requestPixels(contentType: string | undefined, body: Buffer, preprocess: Preprocess): Float32Array | Float64Array {
  const mediaType = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (mediaType === 'image/png') return pngPixels(body, preprocess);
  if (mediaType === 'application/json') return jsonPixels(body);
  throw new MnistDdpError('BAD_REQUEST', `unsupported Content-Type '${contentType ?? ''}'; send image/png or application/json {"pixels": [784 numbers]}`, {
    status: 415, contentType,
  });
}

function pngPixels(body: Buffer, preprocess: Preprocess): Float32Array {
  checkInterlacedSize(body, checkPngHeader(body));
  let png: { width: number; height: number; data: Buffer };
  try {
    png = PNG.sync.read(body);
  } catch (err) {
    throw new MnistDdpError('BAD_REQUEST', `body is not a valid PNG image: ${(err as Error).message}`, { status: 400 });
  }
  return preprocess.preprocessRgba(png.data, png.width, png.height);
}

function jsonPixels(body: Buffer): Float64Array {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new MnistDdpError('BAD_REQUEST', `body is not valid JSON: ${(err as Error).message}`, { status: 400 });
  }
  const pixels = typeof parsed === 'object' && parsed !== null ? (parsed as { pixels?: unknown }).pixels : undefined;
  if (!Array.isArray(pixels)) {
    throw new MnistDdpError('BAD_REQUEST', 'JSON body must be an object {"pixels": [784 numbers in 0..1]}', { status: 400 });
  }
  if (pixels.length !== IMAGE_PIXELS) {
    throw new MnistDdpError('BAD_REQUEST', `"pixels" has ${pixels.length} values; send ${IMAGE_PIXELS} (28×28, row-major)`, {
      status: 400, length: pixels.length,
    });
  }
  // Doubles, not float32: normalising v/255 in double precision is exactly what training's lookup table did.
  const out = new Float64Array(IMAGE_PIXELS);
  for (let i = 0; i < IMAGE_PIXELS; i++) {
    const v: unknown = pixels[i];
    if (typeof v !== 'number' || !(v >= 0 && v <= 1)) {
      throw new MnistDdpError('BAD_REQUEST', `"pixels"[${i}] is ${JSON.stringify(v)}; every value must be a number in 0..1`, { status: 400, index: i });
    }
    out[i] = v;
  }
  return out;
}
