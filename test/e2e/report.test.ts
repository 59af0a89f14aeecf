import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readHistory, runReport } from '../../src/report/write-report.js';
import { loadMnist } from '../../src/shared/data/mnist.js';
import { HAVE_CHROMIUM, launchChromium } from '../helpers/browser.js';

/** A plausible run directory, written by hand so this test does not depend on the trainer. */
function writeFixtureRun(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const lines: string[] = [];
  const stepsPerEpoch = 120;
  let step = 0;
  for (let epoch = 1; epoch <= 3; epoch++) {
    for (let i = 0; i < stepsPerEpoch; i++, step++) {
      const progress = step / (3 * stepsPerEpoch);
      lines.push(JSON.stringify({
        type: 'step', step, epoch, loss: 2.3 * Math.exp(-6 * progress) + 0.05 + 0.04 * Math.sin(step * 1.7),
        lr: 1e-3 * 0.5 * (1 + Math.cos(Math.PI * progress)), samplesPerSec: 2600 + 150 * Math.sin(step / 7), workers: 2, time: step * 25,
      }));
    }
    lines.push(JSON.stringify({ type: 'epoch', epoch, valAccuracy: [0.952, 0.978, 0.986][epoch - 1], valLoss: [0.16, 0.075, 0.048][epoch - 1], time: step * 25 + 400 }));
  }
  lines.push('{"type":"step","step":360,"ep'); // torn last line of a killed run: tolerated
  writeFileSync(join(dir, 'history.jsonl'), `${lines.join('\n')}\n`);

  const { test } = loadMnist();
  const confusion = Array.from({ length: 10 }, () => new Array<number>(10).fill(0));
  for (let i = 0; i < test.count; i++) {
    const label = test.labels[i]!;
    const predicted = i % 67 === 0 ? (label + 3) % 10 : label;
    confusion[label]![predicted]!++;
  }
  const perClass = confusion.map((row, k) => {
    const support = row.reduce((a, b) => a + b, 0);
    const predicted = confusion.reduce((a, r) => a + r[k]!, 0);
    const precision = row[k]! / predicted;
    const recall = row[k]! / support;
    return { label: k, precision, recall, f1: (2 * precision * recall) / (precision + recall), support };
  });
  const misclassified = Array.from({ length: 30 }, (_, n) => {
    const index = n * 67;
    return { index, label: test.labels[index]!, predicted: (test.labels[index]! + 3) % 10, confidence: 0.99 - n * 0.02 };
  });
  const accuracy = perClass.reduce((a, c) => a + c.recall * c.support, 0) / test.count;
  writeFileSync(join(dir, 'eval.json'), JSON.stringify({
    accuracy, macroF1: perClass.reduce((a, c) => a + c.f1, 0) / 10, count: test.count, loss: 0.05, confusion, perClass, misclassified,
  }));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ model: 'cnn', epochs: 3 }));
}

let work: string;
let runDir: string;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'mnist-ddp-report-'));
  runDir = join(work, 'run-1');
  writeFixtureRun(runDir);
});

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('runReport', () => {
  it('writes one self-contained report.html with the charts, confusion matrix and misclassified digits', async () => {
    const out: string[] = [];
    const result = await runReport({ run: runDir }, { stdout: (s) => out.push(s) });
    expect(result).toMatchObject({ out: join(runDir, 'report.html'), steps: 360, epochs: 3, misclassifiedShown: 24 });
    expect(out.join('')).toContain('report.html');
    const html = readFileSync(result.out, 'utf8');
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//i);
    for (const chart of ['loss', 'accuracy', 'lr', 'throughput', 'confusion']) expect(html).toContain(`data-chart="${chart}"`);
    expect(html.match(/<img src="data:image\/png;base64,/g)).toHaveLength(24);
    // Most confident first.
    expect(html.indexOf('data-index="0"')).toBeLessThan(html.indexOf('data-index="67"'));
  });

  it('names the file and line of a malformed history record, and refuses a directory that is not a run', async () => {
    const bad = join(work, 'bad');
    mkdirSync(bad);
    writeFileSync(join(bad, 'history.jsonl'), '{"type":"step","step":0,"epoch":1,"loss":"x","lr":1,"samplesPerSec":1,"time":0}\n{}\n');
    expect(() => readHistory(join(bad, 'history.jsonl'))).toThrow(/history\.jsonl: line 1: loss/);
    await expect(runReport({ run: bad }, { stdout: () => {} })).rejects.toMatchObject({ code: 'CHECKPOINT_INVALID' });
    await expect(runReport({ run: join(work, 'missing') }, { stdout: () => {} })).rejects.toMatchObject({ code: 'DATA_NOT_FOUND' });
  });
});

if (!HAVE_CHROMIUM) process.stderr.write('[report.test] SKIPPED rendering: /usr/bin/chromium is absent; install it with `apt-get install -y chromium`\n');

describe.skipIf(!HAVE_CHROMIUM)('report.html rendered in headless Chromium', () => {
  it('shows every chart at its size, with ink in it, and the digit images decode', async () => {
    const { out } = await runReport({ run: runDir, out: join(work, 'rendered.html') }, { stdout: () => {} });
    const browser = await launchChromium({ width: 1280, height: 900 });
    try {
      const page = await browser.context.newPage();
      const pageErrors: string[] = [];
      page.on('pageerror', (e) => pageErrors.push(e.message));
      await page.goto(`file://${out}`);
      const shot = join(process.env.MNIST_DDP_SCREENSHOT_DIR ?? work, 'mnist-ddp-report.png');
      await page.screenshot({ path: shot, fullPage: true });
      for (const chart of ['loss', 'accuracy', 'lr', 'throughput', 'confusion']) {
        const el = page.locator(`svg[data-chart="${chart}"]`);
        const box = await el.boundingBox();
        expect(box, chart).not.toBeNull();
        expect(box!.width, chart).toBeGreaterThanOrEqual(chart === 'confusion' ? 400 : 460);
        expect(box!.height, chart).toBeGreaterThanOrEqual(260);
        const png = PNG.sync.read(await el.screenshot());
        let ink = 0;
        for (let i = 0; i < png.data.length; i += 4) if (png.data[i]! < 200 || png.data[i + 1]! < 200 || png.data[i + 2]! < 200) ink++;
        // Lines, ticks and text: well above 1 % of the pixels are not white in any non-blank chart.
        expect(ink / (png.width * png.height), chart).toBeGreaterThan(0.01);
      }
      const polylinePoints = await page.locator('svg[data-chart="loss"] polyline[data-series="training"]').getAttribute('points');
      expect(polylinePoints!.split(' ').length).toBe(360);
      const images = await page.evaluate(() => [...document.images].map((img) => [img.complete, img.naturalWidth, img.naturalHeight]));
      expect(images).toHaveLength(24);
      for (const [complete, w, h] of images) expect([complete, w, h]).toEqual([true, 28, 28]);
      expect(pageErrors).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});
