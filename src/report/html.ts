/**
 * Renders a training run as one self-contained HTML page: inline SVG charts and CSS, images as data URIs, no
 * scripts and no external resources, so the file can be mailed or archived and opens offline.
 */
import { median } from '../shared/core/stats.js';
import type { Mistake } from '../shared/train/mistake.js';

/** Misclassified test digits a report shows; training keeps exactly this many in eval.json. */
export const DEFAULT_MISCLASSIFIED = 24;

export interface StepRecord { step: number; epoch: number; loss: number; lr: number; samplesPerSec: number; time: number }
/** valAccuracy/valLoss are null for a run without a validation split. */
export interface EpochRecord { epoch: number; valAccuracy: number | null; valLoss: number | null; time: number }
export interface PerClass { label: number; precision: number; recall: number; f1: number; support: number }
export interface EvalResult {
  accuracy: number;
  macroF1: number;
  /** rows = true label, columns = predicted. */
  confusion: number[][];
  perClass: PerClass[];
  misclassified: Mistake[];
}

export interface ReportData {
  title: string;
  runDir: string;
  steps: StepRecord[];
  epochs: EpochRecord[];
  evaluation?: EvalResult;
  /** The most confidently misclassified digits, with their 28×28 PNG as a data URI. */
  misclassifiedImages: Array<Mistake & { dataUri: string }>;
  generatedAt: Date;
}

const COLORS = { blue: '#4c78a8', orange: '#f58518', red: '#e45756', green: '#54a24b', grey: '#8c8c8c' };
const MAX_POINTS = 800;

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

type Point = [number, number];

/** Bucket means, so a 100 000-step run still draws a smooth, small polyline. */
export function downsample(points: Point[], max: number = MAX_POINTS): Point[] {
  if (points.length <= max) return points;
  const out: Point[] = [];
  const size = points.length / max;
  for (let b = 0; b < max; b++) {
    const from = Math.floor(b * size);
    const to = Math.max(from + 1, Math.floor((b + 1) * size));
    let sx = 0;
    let sy = 0;
    for (let i = from; i < to; i++) {
      sx += points[i]![0];
      sy += points[i]![1];
    }
    out.push([sx / (to - from), sy / (to - from)]);
  }
  return out;
}

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function fmt(v: number): string {
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
  return Number(v.toPrecision(3)).toString();
}

/** Tick labels with as many decimals as the tick spacing needs, so neighbouring labels never look equal. */
function tickLabels(ticks: number[]): string[] {
  if (ticks.length < 2) return ticks.map(fmt);
  const step = Math.abs(ticks[1]! - ticks[0]!);
  const a = Math.max(...ticks.map(Math.abs));
  if (step < 1e-3 || a >= 1e5) return ticks.map((t) => (t === 0 ? '0' : t.toExponential(1)));
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return ticks.map((t) => t.toFixed(decimals));
}

interface Series { name: string; color: string; points: Point[]; dots?: boolean }

export const CHART = { width: 460, height: 260 };

export function lineChart(id: string, title: string, series: Series[], xLabel: string, opts: { yMin?: number; yMax?: number } = {}): string {
  const { width, height } = CHART;
  const m = { left: 56, right: 16, top: 30, bottom: 40 };
  const all = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (all.length === 0) {
    return `<svg class="chart" data-chart="${id}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img">` +
      `<text x="12" y="20" class="title">${escapeHtml(title)}</text><text x="${width / 2}" y="${height / 2}" text-anchor="middle" class="empty">no data</text></svg>`;
  }
  let x0 = Math.min(...all.map((p) => p[0]));
  let x1 = Math.max(...all.map((p) => p[0]));
  let y0 = opts.yMin ?? Math.min(...all.map((p) => p[1]));
  let y1 = opts.yMax ?? Math.max(...all.map((p) => p[1]));
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { const pad = Math.abs(y0) * 0.1 || 1; y0 -= pad; y1 += pad; }
  const pw = width - m.left - m.right;
  const ph = height - m.top - m.bottom;
  const sx = (x: number): number => m.left + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number): number => m.top + ph - ((y - y0) / (y1 - y0)) * ph;
  const parts: string[] = [];
  parts.push(`<svg class="chart" data-chart="${id}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeHtml(title)}">`);
  parts.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#fff"/>`);
  parts.push(`<text x="12" y="20" class="title">${escapeHtml(title)}</text>`);
  const yTicks = niceTicks(y0, y1);
  tickLabels(yTicks).forEach((label, i) => {
    const y = sy(yTicks[i]!).toFixed(1);
    parts.push(`<line x1="${m.left}" x2="${width - m.right}" y1="${y}" y2="${y}" class="grid"/>`);
    parts.push(`<text x="${m.left - 6}" y="${y}" dy="0.32em" text-anchor="end" class="tick">${label}</text>`);
  });
  // Steps and epochs are whole numbers: no ticks between them.
  const integerX = all.every(([x]) => Number.isInteger(x));
  const xTicks = niceTicks(x0, x1).filter((t) => !integerX || Number.isInteger(t));
  tickLabels(xTicks).forEach((label, i) => {
    const x = sx(xTicks[i]!).toFixed(1);
    parts.push(`<line x1="${x}" x2="${x}" y1="${m.top + ph}" y2="${m.top + ph + 4}" class="axis"/>`);
    parts.push(`<text x="${x}" y="${m.top + ph + 16}" text-anchor="middle" class="tick">${label}</text>`);
  });
  parts.push(`<line x1="${m.left}" x2="${width - m.right}" y1="${m.top + ph}" y2="${m.top + ph}" class="axis"/>`);
  parts.push(`<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${m.top + ph}" class="axis"/>`);
  parts.push(`<text x="${m.left + pw / 2}" y="${height - 6}" text-anchor="middle" class="label">${escapeHtml(xLabel)}</text>`);
  series.forEach((s, i) => {
    const pts = downsample(s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)));
    const d = pts.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ');
    parts.push(`<polyline class="series" data-series="${escapeHtml(s.name)}" points="${d}" fill="none" stroke="${s.color}" stroke-width="1.8"/>`);
    if (s.dots) for (const [x, y] of pts) parts.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="3" fill="${s.color}"/>`);
    const lx = width - m.right - 8 - (series.length - 1 - i) * 120;
    parts.push(`<rect x="${lx - 110}" y="10" width="10" height="10" fill="${s.color}"/><text x="${lx - 96}" y="19" class="legend">${escapeHtml(s.name)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('');
}

/** White → blue by count/rowTotal (recall share), so a class's errors stand out whatever its size. */
export function confusionHeatmap(confusion: number[][]): string {
  const n = confusion.length;
  const cell = 34;
  const m = { left: 64, top: 56 };
  const width = m.left + n * cell + 16;
  const height = m.top + n * cell + 16;
  const parts: string[] = [];
  parts.push(`<svg class="chart" data-chart="confusion" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="confusion matrix">`);
  parts.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#fff"/>`);
  parts.push(`<text x="12" y="20" class="title">Confusion matrix (rows: true label, columns: predicted)</text>`);
  for (let c = 0; c < n; c++) parts.push(`<text x="${m.left + c * cell + cell / 2}" y="${m.top - 8}" text-anchor="middle" class="tick">${c}</text>`);
  for (let r = 0; r < n; r++) {
    const row = confusion[r] ?? [];
    const total = row.reduce((a, b) => a + b, 0) || 1;
    parts.push(`<text x="${m.left - 8}" y="${m.top + r * cell + cell / 2}" dy="0.32em" text-anchor="end" class="tick">${r}</text>`);
    for (let c = 0; c < n; c++) {
      const v = row[c] ?? 0;
      const share = v / total;
      // sqrt spreads the small off-diagonal shares so single errors are visible.
      const t = Math.sqrt(share);
      const rgb = [255 - t * (255 - 31), 255 - t * (255 - 84), 255 - t * (255 - 150)].map((x) => Math.round(x));
      const x = m.left + c * cell;
      const y = m.top + r * cell;
      parts.push(`<rect x="${x}" y="${y}" width="${cell - 1}" height="${cell - 1}" fill="rgb(${rgb.join(',')})"><title>true ${r}, predicted ${c}: ${v}</title></rect>`);
      if (v > 0) parts.push(`<text x="${x + cell / 2}" y="${y + cell / 2}" dy="0.32em" text-anchor="middle" class="cell" fill="${t > 0.6 ? '#fff' : '#222'}">${v}</text>`);
    }
  }
  parts.push(`<text x="${m.left + (n * cell) / 2}" y="${m.top - 26}" text-anchor="middle" class="label">predicted</text>`);
  parts.push('</svg>');
  return parts.join('');
}

function pct(x: number): string {
  return `${(x * 100).toFixed(2)} %`;
}

function perClassTable(rows: PerClass[]): string {
  const body = rows.map((r) => `<tr><td>${r.label}</td><td>${pct(r.precision)}</td><td>${pct(r.recall)}</td><td>${pct(r.f1)}</td><td>${r.support}</td></tr>`).join('');
  return `<table class="per-class"><thead><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr></thead><tbody>${body}</tbody></table>`;
}

function misclassifiedGrid(items: ReportData['misclassifiedImages']): string {
  if (items.length === 0) return '<p class="muted">No misclassified examples recorded.</p>';
  const cells = items.map((m) => `<figure class="digit" data-index="${m.index}"><img src="${m.dataUri}" width="56" height="56" alt="test image ${m.index}">` +
    `<figcaption>true <b>${m.label}</b> → <b class="wrong">${m.predicted}</b><br>${(m.confidence * 100).toFixed(1)} % · #${m.index}</figcaption></figure>`).join('');
  return `<div class="grid">${cells}</div>`;
}

const CSS = `
body { font-family: system-ui, -apple-system, sans-serif; margin: 24px; color: #222; background: #f4f5f7; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 10px; }
.muted { color: #666; } .summary { display: flex; gap: 16px; flex-wrap: wrap; margin: 12px 0; }
.card { background: #fff; border-radius: 6px; padding: 10px 16px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.card b { display: block; font-size: 22px; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
svg.chart { background: #fff; border-radius: 6px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
svg .title { font-size: 13px; font-weight: 600; } svg .tick { font-size: 10px; fill: #555; }
svg .label, svg .legend { font-size: 11px; fill: #333; } svg .grid { stroke: #e6e6e6; } svg .axis { stroke: #888; }
svg .cell { font-size: 10px; } svg .empty { fill: #999; font-size: 13px; }
table.per-class { border-collapse: collapse; background: #fff; font-variant-numeric: tabular-nums; }
table.per-class td, table.per-class th { padding: 4px 12px; text-align: right; border-bottom: 1px solid #eee; }
.eval { display: flex; gap: 24px; flex-wrap: wrap; align-items: flex-start; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
figure.digit { margin: 0; background: #fff; padding: 6px; border-radius: 6px; text-align: center; width: 92px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
figure.digit img { image-rendering: pixelated; background: #000; display: block; margin: 0 auto 4px; }
figure.digit figcaption { font-size: 11px; } .wrong { color: ${COLORS.red}; }
`;

export function renderReportHtml(data: ReportData): string {
  const { steps, epochs, evaluation } = data;
  const cards: string[] = [];
  if (evaluation) {
    cards.push(`<div class="card">test accuracy<b>${pct(evaluation.accuracy)}</b></div>`);
    cards.push(`<div class="card">macro F1<b>${pct(evaluation.macroF1)}</b></div>`);
  }
  const lastEpoch = [...epochs].reverse().find((e) => e.valAccuracy !== null);
  if (lastEpoch?.valAccuracy != null) cards.push(`<div class="card">final validation accuracy<b>${pct(lastEpoch.valAccuracy)}</b></div>`);
  if (steps.length > 0) {
    const wall = Math.max(...steps.map((s) => s.time), ...epochs.map((e) => e.time)) - Math.min(...steps.map((s) => s.time));
    const rates = steps.map((s) => s.samplesPerSec).filter(Number.isFinite);
    cards.push(`<div class="card">steps<b>${steps.length}</b></div>`);
    if (rates.length > 0) cards.push(`<div class="card">median samples/s<b>${fmt(median(rates))}</b></div>`);
    if (wall > 0) cards.push(`<div class="card">wall time<b>${(wall / 1000).toFixed(1)} s</b></div>`);
  }
  // Validation points sit at the last step of their epoch, so both losses share the step axis.
  const lastStepOfEpoch = new Map<number, number>();
  for (const s of steps) lastStepOfEpoch.set(s.epoch, Math.max(lastStepOfEpoch.get(s.epoch) ?? -Infinity, s.step));
  const valLossPoints: Point[] = epochs.flatMap((e): Point[] => (e.valLoss === null ? [] : [[lastStepOfEpoch.get(e.epoch) ?? e.epoch, e.valLoss]]));
  const valAccuracyPoints: Point[] = epochs.flatMap((e): Point[] => (e.valAccuracy === null ? [] : [[e.epoch, e.valAccuracy]]));
  const charts = [
    lineChart('loss', 'Loss', [
      { name: 'training', color: COLORS.blue, points: steps.map((s) => [s.step, s.loss]) },
      { name: 'validation', color: COLORS.orange, points: valLossPoints, dots: true },
    ], steps.length > 0 ? 'step' : 'epoch'),
    lineChart('accuracy', 'Validation accuracy', [
      { name: 'validation', color: COLORS.green, points: valAccuracyPoints, dots: true },
    ], 'epoch'),
    lineChart('lr', 'Learning rate', [{ name: 'lr', color: COLORS.red, points: steps.map((s) => [s.step, s.lr]) }], 'step', { yMin: 0 }),
    lineChart('throughput', 'Throughput (samples/s)', [
      { name: 'samples/s', color: COLORS.grey, points: steps.map((s) => [s.step, s.samplesPerSec]) },
    ], 'step', { yMin: 0 }),
  ];
  const evalSection = evaluation
    ? `<h2>Test set evaluation</h2><div class="eval">${confusionHeatmap(evaluation.confusion)}${perClassTable(evaluation.perClass)}</div>
<h2>Most confidently misclassified test digits</h2>${misclassifiedGrid(data.misclassifiedImages)}`
    : '<h2>Test set evaluation</h2><p class="muted">No eval.json in this run.</p>';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(data.title)}</title><style>${CSS}</style></head>
<body>
<h1>${escapeHtml(data.title)}</h1>
<p class="muted">${escapeHtml(data.runDir)} · generated ${escapeHtml(data.generatedAt.toISOString())}</p>
<div class="summary">${cards.join('')}</div>
<h2>Training</h2>
<div class="charts">${charts.join('')}</div>
${evalSection}
</body></html>
`;
}
