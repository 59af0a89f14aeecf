import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  benchConfigSchema, coordinatorConfigSchema, defaultOf, envName, evalConfigSchema, exportConfigSchema, fromConfigFile, fromEnv, isExplicit, narrowConfig, resolveConfig, serveConfigSchema, trainConfigSchema,
  transferConfigSchema, workerConfigSchema,
} from '../../src/shared/core/config.js';
import { isMnistDdpError, type MnistDdpError } from '../../src/shared/core/errors.js';

const TRAIN_KEYS = Object.keys(trainConfigSchema.shape);

const dir = mkdtempSync(join(tmpdir(), 'mnist-ddp-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function configFile(name: string, content: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

function rejection(fn: () => unknown): MnistDdpError {
  try {
    fn();
  } catch (err) {
    if (isMnistDdpError(err)) return err;
    throw err;
  }
  throw new Error('expected an MnistDdpError, nothing was thrown');
}

/** The train config from the three sources the CLI uses, with an injected environment. */
const train = (s: { flags?: Record<string, unknown>; env?: NodeJS.ProcessEnv; file?: string }) =>
  resolveConfig(trainConfigSchema, { flags: s.flags ?? {}, env: fromEnv(TRAIN_KEYS, s.env ?? {}), file: fromConfigFile(s.file) });

describe('envName', () => {
  it('maps camelCase keys to MNIST_DDP_SNAKE_CASE', () => {
    expect(envName('epochs')).toBe('MNIST_DDP_EPOCHS');
    expect(envName('batchSize')).toBe('MNIST_DDP_BATCH_SIZE');
    expect(envName('minLrFactor')).toBe('MNIST_DDP_MIN_LR_FACTOR');
  });
});

describe('fromEnv', () => {
  it('reads only MNIST_DDP_<KEY> for the schema keys', () => {
    expect(fromEnv(TRAIN_KEYS, { MNIST_DDP_EPOCHS: '3', EPOCHS: '9', MNIST_DDP_NOT_A_KEY: 'x', MNIST_DDP_BATCH_SIZE: '16' })).toEqual({ epochs: '3', batchSize: '16' });
  });
});

describe('resolveConfig precedence: flags > env > file > defaults', () => {
  const file = configFile('all.json', { epochs: 3, batchSize: 16, lr: 0.1, model: 'mlp', optimizer: 'adam' });
  const env = { MNIST_DDP_EPOCHS: '4', MNIST_DDP_BATCH_SIZE: '24', MNIST_DDP_LR: '0.2' };

  it('defaults when nothing is given', () => {
    const c = train({});
    expect(c).toMatchObject({ model: 'cnn', epochs: 2, batchSize: 64, lr: 0.05, optimizer: 'sgd', seed: 42, report: true, json: false });
    expect(c.maxSteps).toBeUndefined();
  });

  it('file over defaults, env over file, flags over env', () => {
    expect(train({ file })).toMatchObject({ epochs: 3, batchSize: 16, lr: 0.1, model: 'mlp', optimizer: 'adam', momentum: 0.9 });
    expect(train({ file, env })).toMatchObject({ epochs: 4, batchSize: 24, lr: 0.2, model: 'mlp', momentum: 0.9 });
    const c = train({ file, env, flags: { epochs: '5', model: 'lenet' } });
    expect(c).toMatchObject({ epochs: 5, batchSize: 24, lr: 0.2, model: 'lenet', optimizer: 'adam', momentum: 0.9 });
  });

  it('an undefined flag does not mask env or file', () => {
    expect(train({ file, env, flags: { epochs: undefined, batchSize: undefined } })).toMatchObject({ epochs: 4, batchSize: 24 });
  });

  it('a valid flag overrides a bad env value (only the winning value is validated)', () => {
    expect(train({ env: { MNIST_DDP_EPOCHS: '0' }, flags: { epochs: '1' } }).epochs).toBe(1);
  });

  it('coerces strings: numbers, booleans, lists', () => {
    const c = train({ env: { MNIST_DDP_AUGMENT: 'false', MNIST_DDP_JSON: '1', MNIST_DDP_FREEZE: 'conv1, conv2', MNIST_DDP_MAX_STEPS: '50' } });
    expect(c).toMatchObject({ augment: false, json: true, freeze: ['conv1', 'conv2'], maxSteps: 50 });
    expect(train({ flags: { augment: 'no', report: 'off' } })).toMatchObject({ augment: false, report: false });
  });

  it('returns a frozen config', () => {
    const c = train({ flags: { epochs: '3' } });
    expect(Object.isFrozen(c)).toBe(true);
    expect(() => { (c as { epochs: number }).epochs = 9; }).toThrow(TypeError);
  });
});

describe('resolveConfig rejects bad values with CONFIG_INVALID naming the key and its source', () => {
  it('--batch-size abc', () => {
    const err = rejection(() => train({ flags: { batchSize: 'abc' } }));
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain('batchSize');
    expect(err.message).toContain('--batch-size');
    expect(err.message).toContain('"abc"');
    expect(err.details).toMatchObject({ key: 'batchSize', value: 'abc', origin: '--batch-size' });
  });

  it('MNIST_DDP_EPOCHS=0', () => {
    const err = rejection(() => train({ env: { MNIST_DDP_EPOCHS: '0' } }));
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain('epochs');
    expect(err.message).toContain('MNIST_DDP_EPOCHS');
    expect(err.details).toMatchObject({ key: 'epochs', origin: 'MNIST_DDP_EPOCHS' });
  });

  it('a bad value in the config file says it came from the config file', () => {
    const err = rejection(() => train({ file: configFile('bad-lr.json', { lr: -1 }) }));
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain('lr');
    expect(err.message).toContain('config file');
  });

  it('an unknown key in the config file', () => {
    const err = rejection(() => train({ file: configFile('typo.json', { epochs: 2, batchsize: 32 }) }));
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain("unknown key 'batchsize'");
    expect(err.message).toContain('config file');
    expect(err.message).toContain('batchSize'); // lists the known keys, so the typo is obvious
    expect(err.details).toMatchObject({ key: 'batchsize' });
  });

  it('--model resnet names the valid models', () => {
    const err = rejection(() => train({ flags: { model: 'resnet' } }));
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain('model');
    expect(err.message).toContain('--model');
    expect(err.message).toContain('resnet');
    for (const name of ['mlp', 'lenet', 'cnn', 'cnn-large']) expect(err.message).toContain(name);
  });

  it('--balance: auto by default; throughput and equal from a flag or MNIST_DDP_BALANCE; anything else names the modes (issue #13)', () => {
    expect(train({}).balance).toBe('auto');
    expect(train({ flags: { balance: 'throughput' } }).balance).toBe('throughput');
    expect(train({ env: { MNIST_DDP_BALANCE: 'equal' } }).balance).toBe('equal');
    const err = rejection(() => train({ env: { MNIST_DDP_BALANCE: 'fastest' } }));
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain('MNIST_DDP_BALANCE');
    for (const mode of ['auto', 'throughput', 'equal']) expect(err.message).toContain(mode);
  });

  it('a worker ring timeout above 20 s is CONFIG_INVALID (survivors must answer the coordinator during recovery)', () => {
    const err = rejection(() => resolveConfig(workerConfigSchema, { flags: { ringTimeoutMs: '30000' } }));
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain('--ring-timeout-ms');
    expect(err.message).toContain('20000');
    expect(resolveConfig(workerConfigSchema, { flags: { ringTimeoutMs: '20000' } }).ringTimeoutMs).toBe(20_000);
  });

  it('an unknown backend is BACKEND_UNKNOWN, from a flag or the environment', () => {
    const flag = rejection(() => resolveConfig(benchConfigSchema, { flags: { backend: 'cuda' } }));
    expect(flag.code).toBe('BACKEND_UNKNOWN');
    expect(flag.message).toContain('--backend');
    expect(flag.message).toContain('auto, tensorflow, webgpu, wasm, cpu');
    const env = rejection(() => train({ env: { MNIST_DDP_BACKEND: 'gpu' } }));
    expect(env.code).toBe('BACKEND_UNKNOWN');
    expect(env.message).toContain('MNIST_DDP_BACKEND');
  });

  it('a missing required value names its flag and environment variable, which can supply it', () => {
    const exportConfig = (env: NodeJS.ProcessEnv) =>
      resolveConfig(exportConfigSchema, { flags: { checkpoint: 'ckpt' }, env: fromEnv(Object.keys(exportConfigSchema.shape), env) });
    const err = rejection(() => exportConfig({}));
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toBe('missing out: pass --out or set MNIST_DDP_OUT');
    expect(err.details).toMatchObject({ key: 'out', flag: '--out', env: 'MNIST_DDP_OUT' });
    expect(exportConfig({ MNIST_DDP_OUT: 'web' })).toEqual({ checkpoint: 'ckpt', out: 'web', backend: 'auto', json: false });
  });

  it('serve: MNIST_DDP_PORT=abc and --port 70000; the port defaults to 8080', () => {
    const serve = (flags: Record<string, unknown>, env: NodeJS.ProcessEnv) =>
      resolveConfig(serveConfigSchema, { flags: { checkpoint: 'ckpt', ...flags }, env: fromEnv(Object.keys(serveConfigSchema.shape), env) });
    expect(rejection(() => serve({}, { MNIST_DDP_PORT: 'abc' })).details).toMatchObject({ key: 'port', value: 'abc', origin: 'MNIST_DDP_PORT' });
    expect(rejection(() => serve({ port: '70000' }, {})).details).toMatchObject({ key: 'port', origin: '--port' });
    expect(serve({}, {})).toEqual({ checkpoint: 'ckpt', port: 8080, host: '127.0.0.1', backend: 'auto', headersTimeoutMs: 10_000, requestTimeoutMs: 30_000 });
  });

  // Issue #15: every listener binds loopback unless an address is given.
  it('serve, /metrics and the coordinator listen on loopback by default', () => {
    expect(resolveConfig(serveConfigSchema, { flags: { checkpoint: 'ckpt' } }).host).toBe('127.0.0.1');
    expect(resolveConfig(workerConfigSchema, {}).metricsHost).toBe('127.0.0.1');
    const coordinator = resolveConfig(coordinatorConfigSchema, {});
    expect([coordinator.bind, coordinator.metricsHost]).toEqual(['tcp://127.0.0.1:5555', '127.0.0.1']);
    const multiHost = resolveConfig(coordinatorConfigSchema, { flags: { bind: 'tcp://0.0.0.0:5555', metricsHost: '0.0.0.0' } });
    expect([multiHost.bind, multiHost.metricsHost]).toEqual(['tcp://0.0.0.0:5555', '0.0.0.0']);
  });

  it('non-integer and out-of-range numbers', () => {
    expect(rejection(() => train({ flags: { epochs: '1.5' } })).details).toMatchObject({ key: 'epochs', origin: '--epochs' });
    expect(rejection(() => train({ flags: { momentum: '1.5' } })).details).toMatchObject({ key: 'momentum' });
    expect(rejection(() => train({ flags: { batchSize: '70000' } })).details).toMatchObject({ key: 'batchSize' });
    expect(rejection(() => train({ env: { MNIST_DDP_LR: 'Infinity' } })).details).toMatchObject({ key: 'lr', origin: 'MNIST_DDP_LR' });
  });
});

describe('fromConfigFile', () => {
  it('is empty without a path', () => {
    expect(fromConfigFile(undefined)).toEqual({});
  });

  it('rejects a missing file, invalid JSON and a non-object with CONFIG_INVALID naming the file', () => {
    const missing = join(dir, 'missing.json');
    for (const path of [missing, configFile('broken.json', '{"epochs": '), configFile('array.json', [1, 2])]) {
      const err = rejection(() => fromConfigFile(path));
      expect(err.code).toBe('CONFIG_INVALID');
      expect(err.message).toContain(path);
      expect(err.details).toMatchObject({ key: 'config' });
    }
  });
});

describe('explicit keys', () => {
  it('tells a value given by flag, environment or file from a schema default (resume keeps the saved --epochs)', () => {
    const defaulted = resolveConfig(trainConfigSchema, {});
    expect(defaulted.epochs).toBe(2);
    expect(isExplicit(defaulted, 'epochs')).toBe(false);
    expect(isExplicit(resolveConfig(trainConfigSchema, { flags: { epochs: '5' } }), 'epochs')).toBe(true);
    expect(isExplicit(resolveConfig(trainConfigSchema, { env: { epochs: '5' } }), 'epochs')).toBe(true);
    expect(isExplicit(resolveConfig(trainConfigSchema, { file: { epochs: 5 } }), 'epochs')).toBe(true);
    // A coordinator hands its run a narrowed train config: what was explicit stays explicit, its own keys are gone.
    const coordinator = resolveConfig(coordinatorConfigSchema, { flags: { epochs: '5', resume: 'runs/x/checkpoint', bind: 'tcp://0.0.0.0:5555' } });
    const run = narrowConfig(trainConfigSchema, coordinator, { workers: 3 });
    expect([run.epochs, run.workers, 'bind' in run]).toEqual([5, 3, false]);
    expect([isExplicit(run, 'epochs'), isExplicit(run, 'resume'), isExplicit(run, 'workers'), isExplicit(run, 'lr')]).toEqual([true, true, true, false]);
  });
});

describe('experiment transfer', () => {
  it('defaults: one process, 3 pretraining and 10 fine-tuning epochs on 10 % of the labels, augmented pretraining', () => {
    expect(resolveConfig(transferConfigSchema, {})).toEqual({
      workers: 0, backend: 'auto', seed: 42, pretrainEpochs: 3, pretrainAugment: true, finetuneEpochs: 10, labelFraction: 0.1, lr: 0.05, json: false,
    });
    expect(resolveConfig(transferConfigSchema, { env: fromEnv(Object.keys(transferConfigSchema.shape), { MNIST_DDP_PRETRAIN_AUGMENT: 'false' }) }).pretrainAugment).toBe(false);
  });
});

// Issue #12: the schemas hold the defaults; cli.ts shows them in --help through defaultOf.
describe('defaultOf', () => {
  it('is the value a schema gives a key nobody set, for every key of every schema', () => {
    for (const schema of [trainConfigSchema, coordinatorConfigSchema, workerConfigSchema, benchConfigSchema, transferConfigSchema]) {
      const resolved = resolveConfig(schema, {});
      for (const key of Object.keys(schema.shape)) expect(defaultOf(schema, key), key).toEqual((resolved as Record<string, unknown>)[key]);
    }
    expect([defaultOf(workerConfigSchema, 'ringTimeoutMs'), defaultOf(serveConfigSchema, 'port'), defaultOf(trainConfigSchema, 'report')]).toEqual([10_000, 8080, true]);
  });

  it('is undefined for an optional key, a required key and a key the schema lacks', () => {
    expect(defaultOf(trainConfigSchema, 'maxSteps')).toBeUndefined();
    expect(defaultOf(evalConfigSchema, 'checkpoint')).toBeUndefined();
    expect(defaultOf(trainConfigSchema, 'bind')).toBeUndefined();
  });

  it('is not explicit: a config that takes every default has no explicit key', () => {
    const config = resolveConfig(trainConfigSchema, {});
    expect(Object.keys(trainConfigSchema.shape).filter((key) => isExplicit(config, key))).toEqual([]);
  });
});
