// @ts-check
/* global tf */
/**
 * The drawing page: pointer input on a 280×280 black canvas with a white round pen, then the shared MNIST
 * preprocessing (/preprocess.js, the same file the server imports) and the exported model, in the browser.
 * Test hooks, readable from the DOM: body[data-model-ready], #pad[data-strokes] (finished strokes so far),
 * #prediction[data-strokes] (strokes the shown prediction includes), .bar[data-probability], and
 * window.mnistPage.lastInput (the 784 pixels in 0..1 fed to the model).
 */
import { normalise, preprocessRgba } from '/preprocess.js';

const PEN_WIDTH = 18;
const pad = /** @type {HTMLCanvasElement} */ (document.getElementById('pad'));
const seen = /** @type {HTMLCanvasElement} */ (document.getElementById('seen'));
const bars = /** @type {HTMLElement} */ (document.getElementById('bars'));
const predictionEl = /** @type {HTMLElement} */ (document.getElementById('prediction'));
const statusEl = /** @type {HTMLElement} */ (document.getElementById('status'));
const ctx = /** @type {CanvasRenderingContext2D} */ (pad.getContext('2d', { willReadFrequently: true }));
const seenCtx = /** @type {CanvasRenderingContext2D} */ (seen.getContext('2d'));

/** @type {{ lastInput: Float32Array | null, predictions: number }} */
const state = { lastInput: null, predictions: 0 };
// @ts-ignore: test hook
window.mnistPage = state;

let strokes = 0;
/** @type {any} */
let model = null;
let drawing = false;
let last = { x: 0, y: 0 };
let pending = false;

function clearPad() {
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, pad.width, pad.height);
}

function buildBars() {
  for (let k = 0; k < 10; k++) {
    const row = document.createElement('div');
    row.className = 'bar';
    row.dataset.digit = String(k);
    row.innerHTML = `<span>${k}</span><div class="track"><div class="fill"></div></div><span class="value">–</span>`;
    bars.appendChild(row);
  }
}

/** @param {PointerEvent} e */
function point(e) {
  const r = pad.getBoundingClientRect();
  return { x: ((e.clientX - r.left) * pad.width) / r.width, y: ((e.clientY - r.top) * pad.height) / r.height };
}

/** @param {{x: number, y: number}} from @param {{x: number, y: number}} to */
function segment(from, to) {
  ctx.strokeStyle = '#fff';
  ctx.lineWidth = PEN_WIDTH;
  ctx.lineCap = 'round';
  ctx.lineJoin = 'round';
  ctx.beginPath();
  if (from.x === to.x && from.y === to.y) {
    // A zero-length line draws nothing in some browsers: a tap draws a dot the width of the pen.
    ctx.fillStyle = '#fff';
    ctx.arc(from.x, from.y, PEN_WIDTH / 2, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(to.x, to.y);
  ctx.stroke();
}

pad.addEventListener('pointerdown', (e) => {
  e.preventDefault();
  pad.setPointerCapture(e.pointerId);
  drawing = true;
  last = point(e);
  segment(last, last);
});
pad.addEventListener('pointermove', (e) => {
  if (!drawing) return;
  const p = point(e);
  segment(last, p);
  last = p;
  schedulePredict();
});
/** @param {PointerEvent} e */
function endStroke(e) {
  if (!drawing) return;
  drawing = false;
  if (pad.hasPointerCapture(e.pointerId)) pad.releasePointerCapture(e.pointerId);
  strokes++;
  pad.dataset.strokes = String(strokes);
  schedulePredict();
}
pad.addEventListener('pointerup', endStroke);
pad.addEventListener('pointercancel', endStroke);

/** @type {HTMLButtonElement} */ (document.getElementById('clear')).addEventListener('click', () => {
  clearPad();
  strokes = 0;
  pad.dataset.strokes = '0';
  state.lastInput = null;
  predictionEl.textContent = '';
  predictionEl.dataset.strokes = '0';
  delete predictionEl.dataset.predicted;
  for (const row of bars.children) {
    /** @type {HTMLElement} */ (row).classList.remove('top');
    /** @type {HTMLElement} */ (row.querySelector('.fill')).style.width = '0';
    /** @type {HTMLElement} */ (row.querySelector('.value')).textContent = '–';
    delete (/** @type {HTMLElement} */ (row)).dataset.probability;
  }
  seenCtx.fillStyle = '#000';
  seenCtx.fillRect(0, 0, 28, 28);
});

/** Coalesces bursts of pointer events into one prediction per animation frame. */
function schedulePredict() {
  if (pending || !model) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    predictNow();
  });
}

function predictNow() {
  const strokesIncluded = strokes;
  const image = ctx.getImageData(0, 0, pad.width, pad.height);
  const pixels = preprocessRgba(image.data, image.width, image.height);
  state.lastInput = pixels;
  showInput(pixels);
  const probs = tf.tidy(() => model.predict(tf.tensor4d(normalise(pixels), [1, 28, 28, 1])));
  const values = Array.from(probs.dataSync());
  probs.dispose();
  let best = 0;
  for (let k = 1; k < 10; k++) if (values[k] > values[best]) best = k;
  bars.querySelectorAll('.bar').forEach((row, k) => {
    const el = /** @type {HTMLElement} */ (row);
    el.dataset.probability = String(values[k]);
    el.classList.toggle('top', k === best);
    /** @type {HTMLElement} */ (el.querySelector('.fill')).style.width = `${(values[k] * 100).toFixed(1)}%`;
    /** @type {HTMLElement} */ (el.querySelector('.value')).textContent = `${(values[k] * 100).toFixed(1)} %`;
  });
  predictionEl.textContent = String(best);
  predictionEl.dataset.predicted = String(best);
  predictionEl.dataset.strokes = String(strokesIncluded);
  state.predictions++;
}

/** @param {Float32Array} pixels */
function showInput(pixels) {
  const img = seenCtx.createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    const v = Math.round(pixels[i] * 255);
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
    img.data[4 * i + 3] = 255;
  }
  seenCtx.putImageData(img, 0, 0);
}

async function main() {
  clearPad();
  buildBars();
  // The model is tiny: the cpu backend is fast enough and gives float32 results that match the server closely
  // (WebGL may compute in half precision on some GPUs).
  await tf.setBackend('cpu');
  model = await tf.loadLayersModel('/model/model.json');
  document.body.dataset.modelReady = 'true';
  statusEl.textContent = `model loaded (${tf.getBackend()} backend)`;
}

main().catch((err) => {
  statusEl.textContent = `failed to load the model: ${err && err.message ? err.message : err}`;
  document.body.dataset.modelError = String(err);
});
