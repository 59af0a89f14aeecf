import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OPTIMIZER_BIN, readCheckpoint, STATE_JSON, writeCheckpoint, type CheckpointState } from '../../src/coordinator/checkpoints.js';
import { initBackend } from '../../src/shared/core/backend.js';
import { isMnistDdpError, type MnistDdpError } from '../../src/shared/core/errors.js';
import { gatherBatch, loadMnist } from '../../src/shared/data/mnist.js';
import { loadModelDir, MODEL_JSON, saveModelDir, WEIGHTS_BIN } from '../../src/shared/model/io.js';
import { Replica } from '../../src/shared/train/replica.js';

const data = loadMnist();
const TEST_IDS = Array.from({ length: 100 }, (_, i) => i);
let root: string;
let trained: Replica;

/** Raw float32 output bytes of the model on the first 100 test images: compared with Buffer.equals (bitwise). */
function outputBytes(model: tf.LayersModel): Buffer {
  const batch = gatherBatch(data.test.images, data.test.labels, TEST_IDS);
  const values = tf.tidy(() => (model.predict(tf.tensor4d(batch.x, [100, 28, 28, 1])) as tf.Tensor).dataSync() as Float32Array);
  return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
}

/** A replica moved away from its seeded initialisation by a few real steps, so a loader that re-initialises fails. */
async function trainSteps(replica: Replica, steps: number): Promise<void> {
  const buffer = new Float32Array(replica.layout.bufferLength);
  for (let s = 0; s < steps; s++) {
    const ids = Array.from({ length: 32 }, (_, i) => s * 32 + i);
    await replica.computeGradients(gatherBatch(data.train.images, data.train.labels, ids), buffer);
    replica.applyReduced(buffer, 0.01, s);
  }
}

function stateFor(replica: Replica, position: { epoch: number; cursor: number; globalStep: number }): Omit<CheckpointState, 'version' | 'optimizer' | 'savedAt'> {
  return {
    model: 'cnn', ...position, config: { model: 'cnn', batchSize: 32, seed: 9, optimizer: 'adam' },
    rng: { seed: 9, scheme: 'stateless' }, layoutChecksum: replica.layout.checksum, weightsDigest: replica.digest(),
  };
}

async function expectInvalid(promise: Promise<unknown>, file: string): Promise<MnistDdpError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(isMnistDdpError(err, 'CHECKPOINT_INVALID'), `expected CHECKPOINT_INVALID, got ${String(err)}`).toBe(true);
  expect((err as Error).message).toContain(file);
  return err as MnistDdpError;
}

beforeAll(async () => {
  await initBackend('wasm');
  root = mkdtempSync(join(tmpdir(), 'mnist-ddp-checkpoint-'));
  trained = await Replica.create({ model: 'cnn', seed: 9, optimizer: { name: 'adam', momentum: 0, weightDecay: 0 } });
  await trainSteps(trained, 3);
});

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

describe('saveModelDir / loadModelDir', () => {
  it('round-trips to bitwise-identical predictions on 100 test images', async () => {
    const dir = join(root, 'model');
    const fresh = await Replica.create({ model: 'cnn', seed: 9, optimizer: { name: 'sgd', momentum: 0, weightDecay: 0 } });
    const before = outputBytes(trained.model);
    // The trained weights differ from the seeded initialisation, so equality below cannot come from re-building.
    expect(before.equals(outputBytes(fresh.model))).toBe(false);
    await saveModelDir(trained.model, dir);
    expect(readdirSync(dir).sort()).toEqual([MODEL_JSON, WEIGHTS_BIN]);
    expect(readFileSync(join(dir, WEIGHTS_BIN)).byteLength).toBe(34_826 * 4);
    const loaded = await loadModelDir(dir);
    expect(outputBytes(loaded).equals(before)).toBe(true);
    loaded.dispose();
  });

  it('writes files stock tf.loadLayersModel reads: from memory and over HTTP', async () => {
    const dir = join(root, 'stock');
    await saveModelDir(trained.model, dir);
    const before = outputBytes(trained.model);

    const json = JSON.parse(readFileSync(join(dir, MODEL_JSON), 'utf8')) as { format: string; modelTopology: object; weightsManifest: Array<{ paths: string[]; weights: tf.io.WeightsManifestEntry[] }> };
    expect(json.format).toBe('layers-model');
    expect(json.weightsManifest).toHaveLength(1);
    expect(json.weightsManifest[0]!.paths).toEqual([`./${WEIGHTS_BIN}`]);
    const bin = readFileSync(join(dir, WEIGHTS_BIN));
    const fromMemory = await tf.loadLayersModel(tf.io.fromMemory({
      modelTopology: json.modelTopology, weightSpecs: json.weightsManifest[0]!.weights,
      weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength) as ArrayBuffer,
    }));
    expect(outputBytes(fromMemory).equals(before)).toBe(true);
    fromMemory.dispose();

    // The browser path: model.json by URL, weights.bin resolved relative to it by tfjs's own http handler.
    const server: Server = createServer((req, res) => {
      const name = (req.url ?? '').replace(/^\//, '');
      if (![MODEL_JSON, WEIGHTS_BIN].includes(name)) return void res.writeHead(404).end();
      res.writeHead(200).end(readFileSync(join(dir, name)));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const overHttp = await tf.loadLayersModel(`http://127.0.0.1:${port}/${MODEL_JSON}`);
      expect(outputBytes(overHttp).equals(before)).toBe(true);
      overHttp.dispose();
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('writeCheckpoint / readCheckpoint', () => {
  it('round-trips weights, optimiser state and position', async () => {
    const dir = join(root, 'run', 'checkpoint');
    const optimizer = trained.optimizer.state();
    expect(optimizer.step).toBe(3);
    await writeCheckpoint(dir, trained.model, optimizer, stateFor(trained, { epoch: 1, cursor: 384, globalStep: 50 }));
    expect(readdirSync(dir).sort()).toEqual([MODEL_JSON, OPTIMIZER_BIN, STATE_JSON, WEIGHTS_BIN]);
    // Nothing staged or left over beside the checkpoint.
    expect(readdirSync(join(root, 'run'))).toEqual(['checkpoint']);

    const loaded = await readCheckpoint(dir);
    expect(loaded.state).toMatchObject({
      version: 1, model: 'cnn', epoch: 1, cursor: 384, globalStep: 50, weightsDigest: trained.digest(),
      layoutChecksum: trained.layout.checksum, config: { batchSize: 32, seed: 9 },
      optimizer: { name: 'adam', step: 3, slots: 2, length: 34_826 },
    });
    expect(loaded.optimizer.name).toBe('adam');
    expect(loaded.optimizer.step).toBe(3);
    expect(loaded.optimizer.slots).toHaveLength(2);
    loaded.optimizer.slots.forEach((slot, i) => {
      expect(Buffer.from(slot.buffer, slot.byteOffset, slot.byteLength).equals(Buffer.from(optimizer.slots[i]!.buffer))).toBe(true);
    });
    expect(optimizer.slots[1]!.some((v) => v !== 0)).toBe(true);

    // Restored into a replica, the weights digest matches and one more step equals the same step on the original.
    const restored = await Replica.create({ model: loaded.model, seed: 9, optimizer: { name: 'adam', momentum: 0, weightDecay: 0 } });
    restored.optimizer.load(loaded.optimizer);
    expect(restored.digest()).toBe(trained.digest());
    const copy = await Replica.create({ model: await loadModelDir(dir), seed: 9, optimizer: { name: 'adam', momentum: 0, weightDecay: 0 } });
    copy.optimizer.load(optimizer);
    await trainSteps(restored, 1);
    await trainSteps(copy, 1);
    expect(restored.digest()).toBe(copy.digest());
    expect(restored.digest()).not.toBe(trained.digest());
  });

  it('replaces an existing checkpoint in one swap', async () => {
    const dir = join(root, 'swap', 'checkpoint');
    await writeCheckpoint(dir, trained.model, trained.optimizer.state(), stateFor(trained, { epoch: 1, cursor: 0, globalStep: 10 }));
    await writeCheckpoint(dir, trained.model, trained.optimizer.state(), stateFor(trained, { epoch: 2, cursor: 0, globalStep: 20 }));
    expect((await readCheckpoint(dir)).state.globalStep).toBe(20);
    expect(readdirSync(join(root, 'swap'))).toEqual(['checkpoint']);
  });

  it('leaves the previous checkpoint intact when writing the new one fails', async () => {
    const dir = join(root, 'atomic', 'checkpoint');
    await writeCheckpoint(dir, trained.model, trained.optimizer.state(), stateFor(trained, { epoch: 1, cursor: 0, globalStep: 10 }));
    const files = Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f))]));
    // A real model whose save fails part-way: its variables are disposed, so serialising the weights throws.
    const broken = await Replica.create({ model: 'cnn', seed: 1, optimizer: { name: 'adam', momentum: 0, weightDecay: 0 } });
    broken.model.dispose();
    await expect(writeCheckpoint(dir, broken.model, broken.optimizer.state(), stateFor(trained, { epoch: 2, cursor: 0, globalStep: 20 }))).rejects.toThrow(/disposed/);
    for (const [f, bytes] of Object.entries(files)) expect(readFileSync(join(dir, f)).equals(bytes), f).toBe(true);
    const still = await readCheckpoint(dir);
    expect(still.state.globalStep).toBe(10);
    expect(outputBytes(still.model).equals(outputBytes(trained.model))).toBe(true);
  });

  describe('a corrupted checkpoint is CHECKPOINT_INVALID naming the file', () => {
    async function corrupted(name: string, damage: (dir: string) => void): Promise<string> {
      const dir = join(root, 'corrupt', name, 'checkpoint');
      await writeCheckpoint(dir, trained.model, trained.optimizer.state(), stateFor(trained, { epoch: 1, cursor: 0, globalStep: 10 }));
      await readCheckpoint(dir); // intact before the damage
      damage(dir);
      return dir;
    }

    it('missing weights.bin', async () => {
      const dir = await corrupted('no-weights', (d) => unlinkSync(join(d, WEIGHTS_BIN)));
      await expectInvalid(readCheckpoint(dir), join(dir, WEIGHTS_BIN));
      await expectInvalid(loadModelDir(dir), join(dir, WEIGHTS_BIN));
    });

    it('truncated weights.bin', async () => {
      const dir = await corrupted('short-weights', (d) => truncateSync(join(d, WEIGHTS_BIN), 1000));
      await expectInvalid(readCheckpoint(dir), WEIGHTS_BIN);
    });

    it('missing model.json', async () => {
      const dir = await corrupted('no-model', (d) => unlinkSync(join(d, MODEL_JSON)));
      await expectInvalid(readCheckpoint(dir), MODEL_JSON);
    });

    it('truncated optimizer.bin', async () => {
      const dir = await corrupted('short-optimizer', (d) => truncateSync(join(d, OPTIMIZER_BIN), 34_826 * 4 + 6));
      const err = await expectInvalid(readCheckpoint(dir), join(dir, OPTIMIZER_BIN));
      expect(err.message).toContain(`${34_826 * 4 + 6} bytes`);
    });

    it('invalid state.json', async () => {
      const dir = await corrupted('bad-state', (d) => writeFileSync(join(d, STATE_JSON), '{"version": 1, "epoch": '));
      await expectInvalid(readCheckpoint(dir), join(dir, STATE_JSON));
    });

    it('state.json with missing fields', async () => {
      const dir = await corrupted('partial-state', (d) => writeFileSync(join(d, STATE_JSON), JSON.stringify({ version: 1, epoch: 1 })));
      await expectInvalid(readCheckpoint(dir), join(dir, STATE_JSON));
    });

    it('state.json with a bad field: the message names it', async () => {
      const dir = await corrupted('bad-field', (d) => {
        const state = JSON.parse(readFileSync(join(d, STATE_JSON), 'utf8')) as CheckpointState;
        writeFileSync(join(d, STATE_JSON), JSON.stringify({ ...state, optimizer: { ...state.optimizer, name: 'rmsprop' } }));
      });
      const err = await expectInvalid(readCheckpoint(dir), join(dir, STATE_JSON));
      expect(err.message).toContain('optimizer.name');
      const partial = await corrupted('missing-field', (d) => writeFileSync(join(d, STATE_JSON), JSON.stringify({ version: 1, epoch: 1 })));
      expect((await expectInvalid(readCheckpoint(partial), STATE_JSON)).message).toContain("'cursor'");
      const future = await corrupted('future-version', (d) => {
        const state = JSON.parse(readFileSync(join(d, STATE_JSON), 'utf8')) as CheckpointState;
        writeFileSync(join(d, STATE_JSON), JSON.stringify({ ...state, version: 2 }));
      });
      expect((await expectInvalid(readCheckpoint(future), STATE_JSON)).message).toContain("'version'");
    });

    it('model.json with a bad manifest: the message names the field', async () => {
      const dir = await corrupted('bad-manifest', (d) => {
        const json = JSON.parse(readFileSync(join(d, MODEL_JSON), 'utf8')) as { weightsManifest: Array<{ weights: Array<{ dtype: string }> }> };
        json.weightsManifest[0]!.weights[1]!.dtype = 'float64';
        writeFileSync(join(d, MODEL_JSON), JSON.stringify(json));
      });
      const err = await expectInvalid(loadModelDir(dir), join(dir, MODEL_JSON));
      expect(err.message).toContain('weightsManifest.0.weights.1.dtype');
      const noTopology = await corrupted('no-topology', (d) => {
        const json = JSON.parse(readFileSync(join(d, MODEL_JSON), 'utf8')) as Record<string, unknown>;
        delete json.modelTopology;
        writeFileSync(join(d, MODEL_JSON), JSON.stringify(json));
      });
      expect((await expectInvalid(readCheckpoint(noTopology), MODEL_JSON)).message).toContain('modelTopology');
    });

    it('missing optimizer.bin', async () => {
      const dir = await corrupted('no-optimizer', (d) => unlinkSync(join(d, OPTIMIZER_BIN)));
      await expectInvalid(readCheckpoint(dir), join(dir, OPTIMIZER_BIN));
    });

    it('missing state.json, or no directory at all', async () => {
      const dir = await corrupted('no-state', (d) => unlinkSync(join(d, STATE_JSON)));
      await expectInvalid(readCheckpoint(dir), STATE_JSON);
      const nowhere = join(root, 'does-not-exist');
      expect(existsSync(nowhere)).toBe(false);
      await expectInvalid(readCheckpoint(nowhere), nowhere);
      await expectInvalid(loadModelDir(nowhere), nowhere);
    });
  });
});
