import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { MnistDdpError } from '../core/errors.js';
import { readJsonFile } from '../core/json-file.js';

/**
 * The standard TF.js Layers format on disk: `model.json` (topology + weights manifest) and `weights.bin`, the layout
 * `tf.loadLayersModel` reads over HTTP in a browser. tfjs's own `file://` handler lives in tfjs-node, which cannot be
 * installed here, so we write and read the same files ourselves.
 */
export const MODEL_JSON = 'model.json';
export const WEIGHTS_BIN = 'weights.bin';

/** Write-to-temp, fsync, rename: a crash leaves either the old file or the new one, never a torn one. */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

function concatBuffers(data: ArrayBuffer | ArrayBuffer[]): Uint8Array {
  const parts = Array.isArray(data) ? data : [data];
  return Buffer.concat(parts.map((p) => new Uint8Array(p)));
}

export interface ModelArtifactsOnDisk {
  modelTopology: object;
  weightSpecs: tf.io.WeightsManifestEntry[];
  weightData: ArrayBuffer;
}

/** Serialises a model's topology and weights without touching the disk. */
export async function modelArtifacts(model: tf.LayersModel): Promise<ModelArtifactsOnDisk> {
  let captured: tf.io.ModelArtifacts | undefined;
  await model.save(tf.io.withSaveHandler(async (artifacts) => {
    captured = artifacts;
    return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
  }));
  if (!captured?.modelTopology || !captured.weightSpecs || !captured.weightData) throw new Error('model.save produced no artifacts');
  const bytes = concatBuffers(captured.weightData as ArrayBuffer | ArrayBuffer[]);
  return {
    modelTopology: captured.modelTopology as object,
    weightSpecs: captured.weightSpecs,
    weightData: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer,
  };
}

/** The model.json text for `artifacts`, with its weights in ./weights.bin (`weightSpecs` overrides the manifest). */
export function modelJsonOf(artifacts: ModelArtifactsOnDisk, weightSpecs: tf.io.WeightsManifestEntry[] = artifacts.weightSpecs, convertedBy = 'mnist-ddp'): string {
  return JSON.stringify({
    format: 'layers-model',
    generatedBy: `TensorFlow.js tfjs-layers v${tf.version_layers}`,
    convertedBy,
    modelTopology: artifacts.modelTopology,
    weightsManifest: [{ paths: [`./${WEIGHTS_BIN}`], weights: weightSpecs }],
  });
}

export function writeModelFiles(dir: string, artifacts: ModelArtifactsOnDisk, extra: { weightSpecs?: tf.io.WeightsManifestEntry[] } = {}): void {
  mkdirSync(dir, { recursive: true });
  writeFileAtomic(join(dir, WEIGHTS_BIN), new Uint8Array(artifacts.weightData));
  writeFileAtomic(join(dir, MODEL_JSON), modelJsonOf(artifacts, extra.weightSpecs));
}

export async function saveModelDir(model: tf.LayersModel, dir: string): Promise<void> {
  writeModelFiles(dir, await modelArtifacts(model));
}

const VALUE_BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, complex64: 8, uint8: 1, uint16: 2, float16: 2 };

/** Bytes the weight specs occupy (quantised entries at their stored width); undefined when a dtype has no fixed size. */
function manifestByteLength(specs: tf.io.WeightsManifestEntry[]): number | undefined {
  let total = 0;
  for (const spec of specs) {
    const width = VALUE_BYTES[spec.quantization?.dtype ?? spec.dtype];
    if (width === undefined) return undefined;
    total += spec.shape.reduce((a, b) => a * b, 1) * width;
  }
  return total;
}

const uint = z.number().int().nonnegative();

/** One weight in model.json's manifest (tf.io.WeightsManifestEntry); fields this reader does not know are kept. */
const weightSpecSchema = z.object({
  name: z.string(),
  shape: z.array(uint),
  dtype: z.enum(['float32', 'int32', 'bool', 'string', 'complex64']),
  group: z.enum(['model', 'optimizer']).optional(),
  /** Quantised weights (mnist-ddp export --quantize): stored at this dtype's width, dequantised by the loader. */
  quantization: z.object({ dtype: z.enum(['uint16', 'uint8', 'float16']), scale: z.number().optional(), min: z.number().optional() }).passthrough().optional(),
}).passthrough();

/** The parts of a TF.js Layers model.json this reader uses; other top-level keys (format, generatedBy, …) may be present. */
const modelJsonSchema = z.object({
  modelTopology: z.record(z.string(), z.unknown()),
  weightsManifest: z.array(z.object({ paths: z.array(z.string()), weights: z.array(weightSpecSchema) })).min(1),
});

/** Loads a directory written by saveModelDir (or any single-shard TF.js Layers model). */
export async function loadModelDir(dir: string): Promise<tf.LayersModel> {
  const jsonPath = join(dir, MODEL_JSON);
  if (!existsSync(jsonPath)) {
    throw new MnistDdpError('CHECKPOINT_INVALID', `no ${MODEL_JSON} in ${dir}; pass a run's checkpoint directory (e.g. runs/<id>/checkpoint)`, { dir });
  }
  const { modelTopology, weightsManifest: manifest } = readJsonFile(jsonPath, modelJsonSchema, 'a TF.js Layers model.json with modelTopology and weightsManifest');
  const weightSpecs = manifest.flatMap((group) => group.weights);
  const chunks = manifest.flatMap((group) => group.paths.map((p) => {
    const file = join(dir, p);
    if (!existsSync(file)) throw new MnistDdpError('CHECKPOINT_INVALID', `weights file ${file} named in ${jsonPath} is missing`, { file });
    return readFileSync(file);
  }));
  const bytes = Buffer.concat(chunks);
  const expected = manifestByteLength(weightSpecs);
  if (expected !== undefined && bytes.byteLength !== expected) {
    const files = manifest.flatMap((group) => group.paths.map((p) => join(dir, p))).join(', ');
    throw new MnistDdpError('CHECKPOINT_INVALID', `${files} holds ${bytes.byteLength} bytes; the manifest in ${jsonPath} describes ${expected} (truncated or from another model)`, { file: files });
  }
  const weightData = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  try {
    return await tf.loadLayersModel(tf.io.fromMemory({ modelTopology, weightSpecs, weightData }));
  } catch (err) {
    throw new MnistDdpError('CHECKPOINT_INVALID', `cannot load the model in ${dir}: ${(err as Error).message}`, { dir }, { cause: err });
  }
}
