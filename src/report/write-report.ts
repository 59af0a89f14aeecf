import { existsSync, readFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { PNG } from 'pngjs';
import { z } from 'zod';
import type { ReportConfig } from '../shared/core/config.js';
import type { Io } from '../shared/core/io.js';
import { MnistDdpError } from '../shared/core/errors.js';
import { readJsonFile } from '../shared/core/json-file.js';
import { mistakeSchema } from '../shared/train/mistake.js';
import { componentLogger } from '../shared/core/log.js';
import { IMAGE_PIXELS, loadMnist } from '../shared/data/mnist.js';
import { writeFileAtomic } from '../shared/model/io.js';
import { DEFAULT_MISCLASSIFIED, renderReportHtml, type EpochRecord, type EvalResult, type ReportData, type StepRecord } from './html.js';

export interface ReportResult {
  out: string;
  bytes: number;
  steps: number;
  epochs: number;
  misclassifiedShown: number;
}

const log = componentLogger('report');


// Unknown fields are allowed (the trainer adds e.g. `workers`); unknown record types are skipped.
const num = z.number();
const nullableNum = z.number().nullable();
const StepSchema = z.object({ type: z.literal('step'), step: num, epoch: num, loss: nullableNum, lr: nullableNum, samplesPerSec: nullableNum, time: num });
const EpochSchema = z.object({ type: z.literal('epoch'), epoch: num, valAccuracy: nullableNum, valLoss: nullableNum, time: num });
const EvalSchema = z.object({
  accuracy: num,
  macroF1: num,
  confusion: z.array(z.array(z.number().int().nonnegative())).min(1),
  perClass: z.array(z.object({ label: z.number().int(), precision: num, recall: num, f1: num, support: z.number().int() })),
  misclassified: z.array(mistakeSchema).default([]),
});
const ConfigSchema = z.object({ dataDir: z.string().optional() }).passthrough();

function invalid(file: string, why: string): MnistDdpError {
  return new MnistDdpError('CHECKPOINT_INVALID', `${file}: ${why}; a run directory is written by \`mnist-ddp train\``, { file });
}

function issues(err: z.ZodError): string {
  return err.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).slice(0, 3).join('; ');
}

export function readHistory(file: string): { steps: StepRecord[]; epochs: EpochRecord[] } {
  const steps: StepRecord[] = [];
  const epochs: EpochRecord[] = [];
  const lines = readFileSync(file, 'utf8').split('\n');
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      // A run killed mid-write leaves a torn last line: tolerate only that one.
      if (lines.slice(i + 1).every((l) => l.trim() === '')) return;
      throw invalid(file, `line ${i + 1} is not JSON`);
    }
    const type = (value as { type?: unknown } | null)?.type;
    if (type === 'step') {
      const parsed = StepSchema.safeParse(value);
      if (!parsed.success) throw invalid(file, `line ${i + 1}: ${issues(parsed.error)}`);
      const r = parsed.data;
      steps.push({ step: r.step, epoch: r.epoch, loss: r.loss ?? NaN, lr: r.lr ?? NaN, samplesPerSec: r.samplesPerSec ?? NaN, time: r.time });
    } else if (type === 'epoch') {
      const parsed = EpochSchema.safeParse(value);
      if (!parsed.success) throw invalid(file, `line ${i + 1}: ${issues(parsed.error)}`);
      const r = parsed.data;
      epochs.push({ epoch: r.epoch, valAccuracy: r.valAccuracy, valLoss: r.valLoss, time: r.time });
    } else if (type === 'rewind') {
      // Training went back to a checkpoint (issue #14): the records of the steps and epochs it redoes are superseded.
      const r = value as { toStep?: unknown; epoch?: unknown };
      const toStep = typeof r.toStep === 'number' ? r.toStep : 0;
      const epoch = typeof r.epoch === 'number' ? r.epoch : 0;
      for (let k = steps.length - 1; k >= 0; k--) if (steps[k]!.step > toStep) steps.splice(k, 1);
      for (let k = epochs.length - 1; k >= 0; k--) if (epochs[k]!.epoch >= epoch) epochs.splice(k, 1);
    }
  });
  return { steps, epochs };
}

/** A 28×28 digit as a grey-scale PNG data URI (white on black, as stored). */
function digitDataUri(images: Uint8Array, index: number): string {
  const png = new PNG({ width: 28, height: 28, colorType: 0, inputColorType: 6 });
  const pixels = images.subarray(index * IMAGE_PIXELS, (index + 1) * IMAGE_PIXELS);
  for (let i = 0; i < IMAGE_PIXELS; i++) {
    png.data[4 * i] = png.data[4 * i + 1] = png.data[4 * i + 2] = pixels[i]!;
    png.data[4 * i + 3] = 255;
  }
  return `data:image/png;base64,${PNG.sync.write(png, { colorType: 0, inputColorType: 6 }).toString('base64')}`;
}

/** Writes one self-contained report.html for a run directory (rendered by html.ts). */
export async function runReport(opts: ReportConfig, io: Io): Promise<ReportResult> {
  const runDir = resolve(opts.run);
  const historyFile = join(runDir, 'history.jsonl');
  const evalFile = join(runDir, 'eval.json');
  const configFile = join(runDir, 'config.json');
  if (!existsSync(historyFile) && !existsSync(evalFile)) {
    throw new MnistDdpError('DATA_NOT_FOUND', `${runDir} has neither history.jsonl nor eval.json; pass a run directory (runs/<id>)`, { dir: runDir });
  }
  const { steps, epochs } = existsSync(historyFile) ? readHistory(historyFile) : { steps: [], epochs: [] };
  const evaluation: EvalResult | undefined = existsSync(evalFile) ? readJsonFile(evalFile, EvalSchema, 'the eval.json of a run directory written by `mnist-ddp train`') : undefined;
  const config = existsSync(configFile) ? readJsonFile(configFile, ConfigSchema, 'the config.json of a run directory written by `mnist-ddp train`') : {};

  const mistakes = [...(evaluation?.misclassified ?? [])].sort((a, b) => b.confidence - a.confidence).slice(0, DEFAULT_MISCLASSIFIED);
  let misclassifiedImages: ReportData['misclassifiedImages'] = [];
  if (mistakes.length > 0) {
    const { test } = loadMnist(config.dataDir === undefined ? {} : { dataDir: config.dataDir });
    const outOfRange = mistakes.find((m) => m.index >= test.count);
    if (outOfRange) throw invalid(evalFile, `misclassified index ${outOfRange.index} is outside the ${test.count} test images`);
    misclassifiedImages = mistakes.map((m) => ({ ...m, dataUri: digitDataUri(test.images, m.index) }));
  }

  const html = renderReportHtml({
    title: `mnist-ddp run ${basename(runDir)}`, runDir, steps, epochs, evaluation, misclassifiedImages, generatedAt: new Date(),
  });
  const out = resolve(opts.out ?? join(runDir, 'report.html'));
  writeFileAtomic(out, html);
  const result: ReportResult = { out, bytes: Buffer.byteLength(html), steps: steps.length, epochs: epochs.length, misclassifiedShown: misclassifiedImages.length };
  io.stdout(`wrote ${out} (${result.bytes} bytes: ${steps.length} steps, ${epochs.length} epochs, ${misclassifiedImages.length} misclassified digits)\n`);
  log.info(result, 'report written');
  return result;
}
