import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runExport } from '../../src/commands/export.js';
import { initBackend } from '../../src/shared/core/backend.js';
import { exportConfigSchema } from '../../src/shared/core/config.js';
import { buildModel } from '../../src/shared/model/zoo.js';
import { modelArtifacts } from '../../src/shared/model/io.js';
import {
  dequantizeUint8, float16BitsToFloat32, float32ToFloat16Bits, quantizeFloat16, quantizeUint8, quantizeWeights,
} from '../../src/shared/model/quantize.js';
import { randomFloats } from '../helpers/random.js';
import { trainedModelDir } from '../helpers/trained-model.js';

beforeAll(async () => {
  await initBackend('wasm');
});

describe('uint8 affine quantisation', () => {
  it.each([
    ['symmetric', -0.5, 0.5],
    ['all positive', 0.1, 3],
    ['all negative', -2, -0.01],
    ['tiny range', -1e-4, 2e-4],
  ])('round trip error ≤ scale/2 (%s)', (_name, lo, hi) => {
    const values = randomFloats(10_000, 7, lo, hi);
    const q = quantizeUint8(values);
    const back = dequantizeUint8(q.data, q.scale, q.min);
    // Range is widened to include 0: scale ≤ (max(hi,0) − min(lo,0)) / 255.
    expect(q.scale).toBeLessThanOrEqual((Math.max(hi, 0) - Math.min(lo, 0)) / 255 * (1 + 1e-9));
    let worst = 0;
    for (let i = 0; i < values.length; i++) worst = Math.max(worst, Math.abs(back[i]! - values[i]!));
    expect(worst).toBeLessThanOrEqual(q.scale / 2 + 1e-6 * Math.max(Math.abs(lo), Math.abs(hi)));
  });

  it('represents zero exactly and handles a constant zero tensor', () => {
    const q = quantizeUint8(Float32Array.from([-0.3, 0, 0.7, 0]));
    const back = dequantizeUint8(q.data, q.scale, q.min);
    expect(back[1]).toBe(0);
    expect(back[3]).toBe(0);
    const zeros = quantizeUint8(new Float32Array(5));
    expect(Array.from(dequantizeUint8(zeros.data, zeros.scale, zeros.min))).toEqual([0, 0, 0, 0, 0]);
  });
});

describe('float16', () => {
  it('encodes known values bit-exactly', () => {
    expect(float32ToFloat16Bits(1)).toBe(0x3c00);
    expect(float32ToFloat16Bits(-2)).toBe(0xc000);
    expect(float32ToFloat16Bits(0.5)).toBe(0x3800);
    expect(float32ToFloat16Bits(65504)).toBe(0x7bff);
    expect(float32ToFloat16Bits(1e6)).toBe(0x7bff); // saturates, documented
    expect(float32ToFloat16Bits(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(float32ToFloat16Bits(2 ** -26)).toBe(0); // underflow
    expect(float32ToFloat16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie rounds to even
    expect(float32ToFloat16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
  });

  it('round trip relative error ≤ 2^-11 over the normal range, absolute ≤ 2^-25 below it', () => {
    const values = randomFloats(20_000, 3, -4, 4);
    const bits = quantizeFloat16(values);
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      const err = Math.abs(float16BitsToFloat32(bits[i]!) - v);
      if (Math.abs(v) >= 2 ** -14) expect(err).toBeLessThanOrEqual(Math.abs(v) * 2 ** -11);
      else expect(err).toBeLessThanOrEqual(2 ** -25);
    }
  });
});

describe('quantizeWeights: manifest fields that tfjs decodes', () => {
  it.each(['uint8', 'float16'] as const)('%s entries decode with tf.io.decodeWeights to within the bound', async (dtype) => {
    const model = buildModel('cnn', { seed: 3 });
    const artifacts = await modelArtifacts(model);
    const q = quantizeWeights(artifacts.weightSpecs, artifacts.weightData, dtype);
    const bytesPer = dtype === 'uint8' ? 1 : 2;
    const valueCount = artifacts.weightSpecs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
    expect(q.weightData.byteLength).toBe(valueCount * bytesPer);
    const original = tf.io.decodeWeights(artifacts.weightData, artifacts.weightSpecs);
    const decoded = tf.io.decodeWeights(q.weightData, q.weightSpecs);
    for (const spec of q.weightSpecs) {
      expect(spec.dtype).toBe('float32');
      if (dtype === 'uint8') {
        expect(spec.quantization).toEqual({ dtype: 'uint8', scale: expect.any(Number), min: expect.any(Number) });
      } else {
        expect(spec.quantization).toEqual({ dtype: 'float16' });
      }
      const a = original[spec.name]!.dataSync();
      const b = decoded[spec.name]!.dataSync();
      expect(b.length).toBe(a.length);
      let maxAbs = 0;
      let worst = 0;
      for (let i = 0; i < a.length; i++) {
        maxAbs = Math.max(maxAbs, Math.abs(a[i]!));
        worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
      }
      const bound = dtype === 'uint8' ? spec.quantization!.scale! / 2 + 1e-6 * maxAbs : maxAbs * 2 ** -11;
      expect(worst, spec.name).toBeLessThanOrEqual(bound);
    }
    tf.dispose([...Object.values(original), ...Object.values(decoded)]);
    model.dispose();
  });
});

describe('runExport', () => {
  let checkpoint: string;
  let work: string;
  beforeAll(async () => {
    checkpoint = await trainedModelDir();
    work = mkdtempSync(join(tmpdir(), 'mnist-ddp-export-'));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it.each(['uint8', 'float16'] as const)('a %s export loads with stock tf.loadLayersModel and keeps accuracy', async (dtype) => {
    const out = join(work, dtype);
    const lines: string[] = [];
    const result = await runExport(exportConfigSchema.parse({ checkpoint, out, quantize: dtype, json: true }), { stdout: (s) => lines.push(s) });
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toEqual(JSON.parse(JSON.stringify(result)));
    expect(result.testExamples).toBe(10_000);
    expect(result.exported.weightsBytes).toBe(result.float32.weightsBytes / (dtype === 'uint8' ? 4 : 2));
    expect(result.float32.accuracy).toBeGreaterThan(0.93);
    expect(Math.abs(result.exported.accuracy - result.float32.accuracy)).toBeLessThanOrEqual(0.005);

    const modelJson = JSON.parse(readFileSync(join(out, 'model.json'), 'utf8')) as {
      modelTopology: object; weightsManifest: Array<{ paths: string[]; weights: tf.io.WeightsManifestEntry[] }>;
    };
    expect(modelJson.weightsManifest[0]!.paths).toEqual(['./weights.bin']);
    expect(modelJson.weightsManifest[0]!.weights.every((w) => w.quantization?.dtype === dtype)).toBe(true);
    const bytes = readFileSync(join(out, 'weights.bin'));
    const loaded = await tf.loadLayersModel(tf.io.fromMemory({
      modelTopology: modelJson.modelTopology,
      weightSpecs: modelJson.weightsManifest[0]!.weights,
      weightData: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
    }));
    const probs = tf.tidy(() => loaded.predict(tf.zeros([1, 28, 28, 1])) as tf.Tensor);
    expect(probs.shape).toEqual([1, 10]);
    expect(probs.sum().dataSync()[0]).toBeCloseTo(1, 4);
    tf.dispose(probs);
    loaded.dispose();
  });

  it('prints a table without --json', async () => {
    const lines: string[] = [];
    await runExport(exportConfigSchema.parse({ checkpoint, out: join(work, 'f32') }), { stdout: (s) => lines.push(s) });
    expect(lines.join('')).toMatch(/float32 \(exported as is\)\s+139304 B/);
    // An unknown --quantize dtype is CONFIG_INVALID before any work: test/e2e/cli-errors.test.ts.
  });
});
