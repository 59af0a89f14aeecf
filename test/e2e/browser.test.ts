import * as tf from '@tensorflow/tfjs';
import { PNG } from 'pngjs';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runServe, type RunningServer } from '../../src/commands/serve.js';
import { serveConfigSchema } from '../../src/shared/core/config.js';
import { gatherBatch, loadMnist, type MnistSplit } from '../../src/shared/data/mnist.js';
import { loadModelDir } from '../../src/shared/model/io.js';
import { preprocessRgba } from '../../src/serve/preprocess.js';
import { HAVE_CHROMIUM, launchChromium, type Browser } from '../helpers/browser.js';
import { predictClasses, trainedModelDir } from '../helpers/trained-model.js';

/**
 * A person's view of `serve`: headless Chromium opens the page and real MNIST test digits are drawn on its canvas
 * with mouse strokes (one horizontal stroke per run of bright pixels in each row, through the page's own pointer
 * handling, with the page's round 18 px pen on its 10×-scaled canvas).
 *
 * Checks, per digit:
 *  - exact: the 28×28 input the page fed its model equals what src/serve/preprocess.js computes in Node from the
 *    canvas pixels (same algorithm, same file), and POST /predict with the canvas PNG gives the page's answer
 *    (probabilities within 1e-3: browser cpu backend vs wasm in Node);
 *  - approximate: the page's class equals the in-process prediction for the original MNIST image for at least
 *    17 of 20 digits. Redrawing is lossy (pen strokes are binary and ≈0.4 px thicker than the pixels they trace,
 *    anti-aliased grey edges are lost, then the drawing is re-cropped and re-centred), so a digit the model was
 *    unsure about can flip; 17/20 allows three such flips while still failing on any systematic mismatch
 *    (inversion, transposition, wrong scaling or normalisation all drop agreement far below that).
 */
const DIGITS = Array.from({ length: 20 }, (_, i) => i);
const MIN_AGREEMENT = 17;
const CELL = 10;
const INK = 128;

interface PageResult {
  predicted: number;
  probabilities: number[];
  input: number[];
  canvasPng: string;
}

let server: RunningServer;
let browser: Browser;
let model: tf.LayersModel;
let test: MnistSplit;

async function drawDigit(page: Page, image: Uint8Array): Promise<number> {
  const box = await page.locator('#pad').boundingBox();
  if (!box) throw new Error('#pad has no bounding box');
  let strokes = 0;
  for (let row = 0; row < 28; row++) {
    let col = 0;
    while (col < 28) {
      if (image[row * 28 + col]! < INK) {
        col++;
        continue;
      }
      const start = col;
      while (col < 28 && image[row * 28 + col]! >= INK) col++;
      const y = box.y + (row + 0.5) * CELL;
      await page.mouse.move(box.x + (start + 0.5) * CELL, y);
      await page.mouse.down();
      await page.mouse.move(box.x + (col - 0.5) * CELL, y, { steps: 1 });
      await page.mouse.up();
      strokes++;
    }
  }
  return strokes;
}

async function readPage(page: Page, strokes: number): Promise<PageResult> {
  await page.waitForSelector(`#prediction[data-strokes="${strokes}"]`, { timeout: 10_000 });
  return page.evaluate(() => {
    const bars = [...document.querySelectorAll<HTMLElement>('#bars .bar')];
    const state = (window as unknown as { mnistPage: { lastInput: Float32Array } }).mnistPage;
    return {
      predicted: Number(document.getElementById('prediction')!.dataset.predicted),
      probabilities: bars.map((b) => Number(b.dataset.probability)),
      input: Array.from(state.lastInput),
      canvasPng: (document.getElementById('pad') as HTMLCanvasElement).toDataURL('image/png'),
    };
  });
}

if (!HAVE_CHROMIUM) process.stderr.write('[browser.test] SKIPPED: /usr/bin/chromium is absent; install it with `apt-get install -y chromium`\n');

describe.skipIf(!HAVE_CHROMIUM)('drawing page in headless Chromium', () => {
  beforeAll(async () => {
    const checkpoint = await trainedModelDir();
    server = await runServe(serveConfigSchema.parse({ checkpoint, port: 0, backend: 'wasm' }), { stdout: () => {} });
    model = await loadModelDir(checkpoint);
    test = loadMnist().test;
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    model?.dispose();
  });

  it(`draws ${DIGITS.length} MNIST test digits; page, server and in-process predictions agree`, async () => {
    const page = await browser.context.newPage();
    const pageErrors: string[] = [];
    page.on('pageerror', (err) => pageErrors.push(err.message));
    await page.goto(server.url);
    await page.waitForSelector('body[data-model-ready="true"]', { timeout: 60_000 });

    const original = gatherBatch(test.images, test.labels, DIGITS);
    const reference = predictClasses(model, original.x, DIGITS.length).predicted;
    let agree = 0;
    const rows: string[] = [];
    for (const [n, index] of DIGITS.entries()) {
      await page.click('#clear');
      const strokes = await drawDigit(page, test.images.subarray(index * 784, (index + 1) * 784));
      const result = await readPage(page, strokes);

      const png = Buffer.from(result.canvasPng.replace(/^data:image\/png;base64,/, ''), 'base64');
      const decoded = PNG.sync.read(png);
      expect(decoded.width).toBe(280);
      const nodeInput = preprocessRgba(decoded.data, decoded.width, decoded.height);
      let inputDiff = 0;
      for (let i = 0; i < 784; i++) inputDiff = Math.max(inputDiff, Math.abs(nodeInput[i]! - result.input[i]!));
      expect(inputDiff, `digit ${index}: page vs Node preprocessing`).toBe(0);

      const res = await fetch(`${server.url}predict`, { method: 'POST', headers: { 'Content-Type': 'image/png' }, body: new Uint8Array(png) });
      const remote = (await res.json()) as { predicted: number; probabilities: number[] };
      expect(remote.predicted, `digit ${index}: server vs page`).toBe(result.predicted);
      for (let k = 0; k < 10; k++) expect(Math.abs(remote.probabilities[k]! - result.probabilities[k]!)).toBeLessThan(1e-3);

      if (result.predicted === reference[n]) agree++;
      rows.push(`#${index} label ${test.labels[index]} in-process ${reference[n]} page ${result.predicted} (${(Math.max(...result.probabilities) * 100).toFixed(0)} %)`);
    }
    process.stderr.write(`[browser.test] page vs in-process: ${agree}/${DIGITS.length}\n  ${rows.join('\n  ')}\n`);
    expect(pageErrors).toEqual([]);
    expect(agree).toBeGreaterThanOrEqual(MIN_AGREEMENT);
    await page.screenshot({ path: `${process.env.MNIST_DDP_SCREENSHOT_DIR ?? '/tmp'}/mnist-ddp-serve-page.png` });
    await page.close();
  });
});
