import { existsSync, readFileSync } from 'node:fs';
import { z } from 'zod';
import { BACKEND_NAMES } from './backend.js';
import { MnistDdpError } from './errors.js';
import { MODEL_NAMES } from '../model/zoo.js';
import { OPTIMIZER_NAMES } from '../train/optimizers.js';
import { QUANTIZE_DTYPES } from '../model/quantize.js';
import { LR_SCALING_NAMES, SCHEDULE_NAMES } from '../train/lr-schedule.js';
import { ANOMALY_RESPONSES } from '../train/gradient-health.js';
import { BALANCE_MODES } from '../data/shard-plan.js';
import { COMPRESS_MODES } from '../wire/half-float.js';
import { COLLECTIVE_MODES, DEFAULT_DOUBLING_MAX_KIB } from '../wire/collectives.js';

/**
 * The one place that reads the environment. Every process builds one frozen config from, in order of precedence:
 * command-line flags, MNIST_DDP_* environment variables, an optional JSON config file (--config), and the defaults
 * in the schemas below. Validation names the offending key and where it came from.
 */
/** Numbers from flags and variables arrive as strings; a non-number reads "expected a number", not zod's "received nan". */
const number = () => z.coerce.number({ invalid_type_error: 'expected a number' });
const int = (min: number) => number().int('expected a whole number').min(min);
const num = () => number().finite();
const bool = z.preprocess((v) => (typeof v === 'string' ? !['0', 'false', 'no', 'off', ''].includes(v.toLowerCase()) : v), z.boolean());
const port = int(0).max(65535);
/** Fields most commands share: which tfjs backend (cli.ts's --backend help derives from the same names), --json. */
const backend = z.enum(BACKEND_NAMES).default('auto');
const json = bool.default(false);
/** A required path: missing, it is CONFIG_INVALID naming the flag and the environment variable (see resolveConfig). */
const requiredPath = z.string().min(1);
const list = z.preprocess((v) => (typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : v), z.array(z.string().min(1)));

export const trainConfigSchema = z.object({
  model: z.enum(MODEL_NAMES).default('cnn'),
  epochs: int(1).default(2),
  batchSize: int(1).max(65536).default(64),
  optimizer: z.enum(OPTIMIZER_NAMES).default('sgd'),
  lr: num().positive().default(0.05),
  momentum: num().min(0).max(1).default(0.9),
  weightDecay: num().min(0).default(0),
  schedule: z.enum(SCHEDULE_NAMES).default('cosine'),
  gamma: num().positive().default(0.1),
  stepEpochs: int(1).default(1),
  minLrFactor: num().min(0).max(1).default(0.01),
  warmupSteps: int(0).default(100),
  /**
   * `none`: --lr is the peak as given. `linear` (Goyal et al. 2017): --lr is meant for a global batch of
   * lrReferenceBatch and the peak is lr × batchSize × workers / lrReferenceBatch (lr-schedule.ts peakLearningRate).
   * `none` by default, so a run's --lr means what it always meant; the reference is the default batch size, for which
   * the default lr is tuned, so `linear` at one worker and --batch-size 64 changes nothing.
   */
  lrScaling: z.enum(LR_SCALING_NAMES).default('none'),
  lrReferenceBatch: int(1).default(64),
  seed: int(0).default(42),
  validationSize: int(0).default(5000),
  augment: bool.default(false),
  classes: z.string().optional(),
  labelFraction: num().gt(0).max(1).default(1),
  dataDir: z.string().optional(),
  backend,
  runDir: z.string().optional(),
  resume: z.string().optional(),
  from: z.string().optional(),
  freeze: list.default([]),
  freezeUntil: z.string().optional(),
  newHead: bool.default(false),
  maxSteps: int(0).optional(),
  /** Periodic checkpoints (issue #14): every N committed steps ("200") or every T seconds ("60s"); epoch ends always. */
  checkpointEvery: z.string().regex(/^[1-9]\d*s?$/, 'expected a step count (200) or seconds (60s)').optional(),
  /** Periodic checkpoints kept under <run>/checkpoints/ (the latest is also <run>/checkpoint). */
  keepCheckpoints: int(1).default(3),
  trainSubset: int(1).optional(),
  workers: int(0).max(64).default(0),
  /**
   * With --workers N: a silent worker is declared gone after this many ms (absent: the coordinator command's default,
   * 5 s). A webgpu worker on a software adapter can block its event loop longer than that while compiling shaders.
   */
  heartbeatTimeoutMs: int(500).optional(),
  /**
   * A rank whose loss is not finite or whose gradient norm is far outside the others' (issue #15): skip the step on
   * every rank with a warning naming it (default: training goes on, nothing bad is applied), evict it as well, or fail.
   */
  onAnomaly: z.enum(ANOMALY_RESPONSES).default('skip'),
  /** Times the median per-sample gradient norm over which a rank is named (three ranks or more). */
  anomalyFactor: num().gt(1).default(100),
  /**
   * How each step's global batch (workers × batchSize) is split among the ranks (issue #13, mixed rings): by measured
   * throughput, equally, or `auto` (by throughput when the ring mixes devices, such as a GPU and CPU workers).
   */
  balance: z.enum(BALANCE_MODES).default('auto'),
  /**
   * How the ring carries gradients (issue #16): float32, or 16-bit (fp16 / bf16) with error feedback, halving the
   * bytes on the wire for slow links. Every worker gets it from the coordinator; statistics, loss and counts stay exact.
   */
  compress: z.enum(COMPRESS_MODES).default('none'),
  /** Which all-reduce each generation uses (issue #16): the ring, recursive doubling, or by gradient size (collectives.ts). */
  collective: z.enum(COLLECTIVE_MODES).default('auto'),
  /** `auto` uses recursive doubling for gradient buffers up to this many KiB, the ring above. */
  doublingMaxKib: int(0).default(DEFAULT_DOUBLING_MAX_KIB),
  debug: bool.default(false),
  json,
  report: bool.default(true),
});
/** `--checkpoint-every` as steps or seconds. */
export function parseCheckpointEvery(spec: string | undefined): { steps?: number; seconds?: number } {
  if (!spec) return {};
  return spec.endsWith('s') ? { seconds: Number(spec.slice(0, -1)) } : { steps: Number(spec) };
}

export type TrainConfig = Readonly<z.infer<typeof trainConfigSchema>>;

export function envName(key: string): string {
  return `MNIST_DDP_${key.replace(/([A-Z])/g, '_$1').toUpperCase()}`;
}

function flagName(key: string): string {
  return `--${key.replace(/([A-Z])/g, '-$1').toLowerCase()}`;
}

/** Reads MNIST_DDP_<KEY> for every key of a schema; `env` is injectable for tests. */
export function fromEnv(keys: readonly string[], env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of keys) {
    const value = env[envName(key)];
    if (value !== undefined) out[key] = value;
  }
  return out;
}

export function fromConfigFile(path: string | undefined): Record<string, unknown> {
  if (!path) return {};
  if (!existsSync(path)) throw new MnistDdpError('CONFIG_INVALID', `config file ${path} does not exist`, { key: 'config', file: path });
  try {
    const parsed: unknown = JSON.parse(readFileSync(path, 'utf8'));
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('expected a JSON object');
    return parsed as Record<string, unknown>;
  } catch (err) {
    throw new MnistDdpError('CONFIG_INVALID', `config file ${path} is not a JSON object: ${(err as Error).message}`, { key: 'config', file: path });
  }
}

/**
 * The schema's default for `key`, or undefined when it has none (optional and required keys). The defaults are
 * written once, as the schemas' `.default()`s; cli.ts shows them in --help from here, and the README's usage section
 * is generated from that help.
 */
export function defaultOf(schema: z.ZodObject<z.ZodRawShape>, key: string): unknown {
  const parsed = schema.shape[key]?.safeParse(undefined);
  return parsed?.success ? parsed.data : undefined;
}

/** Keys each resolved config got from a flag, the environment or a file (not from a schema default). */
const explicitKeys = new WeakMap<object, ReadonlySet<string>>();

export function isExplicit(config: object, key: string): boolean {
  return explicitKeys.get(config)?.has(key) ?? false;
}

/**
 * The part of a resolved config that a narrower schema knows (e.g. a coordinator's config → the run's train config),
 * revalidated and frozen, with `changes` applied. Keys that were explicit stay explicit, so a narrowed config behaves
 * like the original under isExplicit (`--resume … --epochs N` keeps its --epochs).
 */
export function narrowConfig<S extends z.ZodObject<z.ZodRawShape>>(schema: S, config: object, changes: Partial<z.input<S>> = {}): Readonly<z.infer<S>> {
  const keys = Object.keys(schema.shape);
  const narrowed = Object.freeze(schema.parse({ ...config, ...changes })); // zod drops the keys the schema lacks
  explicitKeys.set(narrowed, new Set([...(explicitKeys.get(config) ?? []), ...Object.keys(changes)].filter((k) => keys.includes(k))));
  return narrowed;
}

/**
 * Merges the sources and validates. Unknown keys in a config file are errors (a typo must not be silently
 * ignored). Throws CONFIG_INVALID naming the key, its flag and environment variable, and the bad value.
 */
export function resolveConfig<S extends z.ZodObject<z.ZodRawShape>>(
  schema: S,
  sources: { flags?: Record<string, unknown>; env?: Record<string, unknown>; file?: Record<string, unknown> },
): Readonly<z.infer<S>> {
  const keys = Object.keys(schema.shape);
  for (const key of Object.keys(sources.file ?? {})) {
    if (!keys.includes(key)) throw new MnistDdpError('CONFIG_INVALID', `unknown key '${key}' in config file; known keys: ${keys.join(', ')}`, { key });
  }
  const defined = (o: Record<string, unknown> = {}): Record<string, unknown> => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
  const merged = { ...defined(sources.file), ...defined(sources.env), ...defined(sources.flags) };
  const result = schema.safeParse(merged);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const key = String(issue.path[0] ?? '');
    if (issue.code === 'invalid_type' && issue.received === 'undefined') {
      throw new MnistDdpError('CONFIG_INVALID', `missing ${key}: pass ${flagName(key)} or set ${envName(key)}`, { key, flag: flagName(key), env: envName(key) });
    }
    const origin = key in defined(sources.flags) ? flagName(key) : key in defined(sources.env) ? envName(key) : 'config file';
    // An unknown backend has its own code (BACKEND_UNKNOWN), not a generic bad value.
    if (key === 'backend' && issue.code === 'invalid_enum_value') {
      throw new MnistDdpError('BACKEND_UNKNOWN', `unknown backend ${JSON.stringify(merged[key])} (${origin}); valid backends: ${BACKEND_NAMES.join(', ')}`, { key, backend: merged[key], valid: [...BACKEND_NAMES], origin });
    }
    throw new MnistDdpError('CONFIG_INVALID', `invalid ${key} (${origin}) = ${JSON.stringify(merged[key])}: ${issue.message}`, { key, value: merged[key], origin });
  }
  const config = Object.freeze(result.data);
  explicitKeys.set(config, new Set(Object.keys(merged)));
  return config;
}

export const benchConfigSchema = z.object({
  model: z.enum(MODEL_NAMES).default('cnn'),
  batchSize: int(1).max(65536).default(64),
  steps: int(4).default(60),
  warmup: int(0).default(5),
  windows: int(1).default(5),
  backend,
  optimizer: z.enum(OPTIMIZER_NAMES).default('sgd'),
  workers: int(0).max(64).default(0),
  seed: int(0).default(1),
  json,
  /** After the timed windows, profile `profileSteps` steps with tf.profile and report time per kernel (issue #17). */
  profile: bool.default(false),
  /** A few steps average out one step's jitter; each profiled step on webgpu is slow (one submit per kernel). */
  profileSteps: int(1).max(100).default(3),
  /** Kernels listed, by time; the rest are summed on one line. */
  profileTop: int(1).max(1000).default(15),
});
export type BenchConfig = Readonly<z.infer<typeof benchConfigSchema>>;

/** --profile runs in this process (bench.ts): with worker processes (bench-distributed.ts) it is refused, not ignored. */
export function checkBenchConfig(config: BenchConfig): void {
  if (config.profile && config.workers >= 1) {
    throw new MnistDdpError('CONFIG_INVALID', `--profile profiles the in-process bench, not ${config.workers} worker processes: drop --workers (or pass --workers 0)`, { key: 'profile', workers: config.workers });
  }
}

/** `mnist-ddp eval`: a checkpoint's evaluation report on the test set. */
export const evalConfigSchema = z.object({
  checkpoint: requiredPath,
  dataDir: z.string().optional(),
  classes: z.string().optional(),
  backend,
  json,
});
export type EvalConfig = Readonly<z.infer<typeof evalConfigSchema>>;

/** `mnist-ddp export`: the TF.js web format of a checkpoint, optionally quantised, with its test accuracy. */
export const exportConfigSchema = z.object({
  /** A TF.js Layers checkpoint directory (model.json + weights.bin). */
  checkpoint: requiredPath,
  /** Output directory for the web model; created if missing, its model.json/weights.bin replaced. */
  out: requiredPath,
  /** Absent: float32 weights as in the checkpoint. */
  quantize: z.enum(QUANTIZE_DTYPES).optional(),
  dataDir: z.string().optional(),
  backend,
  json,
});
export type ExportConfig = Readonly<z.infer<typeof exportConfigSchema>>;

/** `mnist-ddp serve`: the drawing page and POST /predict for a checkpoint. */
export const serveConfigSchema = z.object({
  /** A TF.js Layers model directory: a training checkpoint or an `export` output (quantised weights are fine). */
  checkpoint: requiredPath,
  /** 0 picks a free port. */
  port: port.default(8080),
  /** Loopback unless asked: 0.0.0.0 (or an interface's address) lets other machines reach the page and /predict. */
  host: z.string().min(1).default('127.0.0.1'),
  backend,
  /** A request's headers must arrive within this; a connection silent this long is closed (slow clients). */
  headersTimeoutMs: int(100).default(10_000),
  /** A request's headers and body must arrive within this. */
  requestTimeoutMs: int(100).default(30_000),
});
export type ServeConfig = Readonly<z.infer<typeof serveConfigSchema>>;

/** `mnist-ddp report`: report.html for a run directory. */
export const reportConfigSchema = z.object({
  /** A run directory with history.jsonl and/or eval.json (and optionally config.json with dataDir). */
  run: requiredPath,
  /** Default: <run>/report.html. */
  out: z.string().min(1).optional(),
});
export type ReportConfig = Readonly<z.infer<typeof reportConfigSchema>>;

/** `mnist-ddp data`: dataset statistics and a PNG grid of test digits. */
export const dataConfigSchema = z.object({
  dataDir: z.string().optional(),
  out: z.string().min(1).default('runs/mnist-samples.png'),
  json,
});
export type DataConfig = Readonly<z.infer<typeof dataConfigSchema>>;

/** `mnist-ddp experiment transfer`: the settings shared by its four training runs (see commands/experiment-transfer.ts). */
export const transferConfigSchema = z.object({
  workers: int(0).max(64).default(0),
  backend,
  seed: int(0).default(42),
  pretrainEpochs: int(1).default(3),
  /** Augment the 0-4 pretraining (shifts, rotations): it measurably makes the features transfer better. */
  pretrainAugment: bool.default(true),
  finetuneEpochs: int(1).default(10),
  labelFraction: num().gt(0).max(1).default(0.1),
  lr: num().positive().default(0.05),
  /** Parent directory of the arms' run directories; default runs/<time>-transfer. */
  runDir: z.string().optional(),
  json,
});
export type TransferConfig = Readonly<z.infer<typeof transferConfigSchema>>;

const endpointString = z.string().regex(/^(tcp:\/\/[^:]+:\d+|ipc:\/\/.+)$/, 'expected tcp://HOST:PORT or ipc://PATH');

/**
 * The coordinator's deadline for a reply to a request (ring set-up, snapshot; evaluation gets 4×). After a lost peer
 * a survivor may first have to wait out its ring timeout on the order queued behind the failed step, so worker ring
 * timeouts stay below it.
 */
export const REQUEST_TIMEOUT_MS = 30_000;
export const MAX_RING_TIMEOUT_MS = (2 * REQUEST_TIMEOUT_MS) / 3;

/**
 * ZeroMQ transport security (issue #15), for the coordinator and workers: a key directory from `mnist-ddp keygen`
 * (never a key itself: command lines are visible to every user), or plaintext, which needs --insecure unless every
 * address is loopback (shared/security/transport.ts).
 */
const transportSecurity = {
  keys: z.string().min(1).optional(),
  insecure: bool.default(false),
};

/** "first-last", inclusive (40000-40100), as { first, last }. */
const portRange = z
  .string()
  .regex(/^\d+-\d+$/, 'expected a port range such as 40000-40100')
  .transform((spec) => {
    const [first, last] = spec.split('-').map(Number) as [number, number];
    return { first, last };
  })
  .refine((r) => r.first >= 1 && r.last <= 65535 && r.first <= r.last, 'expected FIRST-LAST with 1 <= FIRST <= LAST <= 65535');

const duration = z.string().regex(/^[1-9]\d*(ms|s|m)$/, 'expected a duration such as 500ms, 10s or 2m');

/** A duration flag ("500ms", "10s", "2m") in milliseconds. */
export function durationMs(spec: string): number {
  const n = Number(/^\d+/.exec(spec)![0]);
  return spec.endsWith('ms') ? n : spec.endsWith('m') ? n * 60_000 : n * 1000;
}

/**
 * `mnist-ddp chaos` (issue #14): fault injection for operators rehearsing preemptions. It signals one random process
 * of the given set every --kill-every (jittered ±50 %, seeded); it does nothing unless run.
 */
export const chaosConfigSchema = z.object({
  killEvery: duration,
  /** Processes to pick from: explicit pids, or a pm2 app's processes (pm2 jlist), re-read before every kill. */
  pids: list.default([]),
  pm2App: z.string().min(1).optional(),
  signal: z.enum(['SIGKILL', 'SIGTERM', 'SIGSTOP']).default('SIGKILL'),
  /** SIGSTOP only: send SIGCONT after this long (a straggler, not a death). */
  thawAfter: duration.default('2s'),
  duration: duration.default('10m'),
  maxKills: int(1).optional(),
  seed: int(0).default(1),
  json,
});
export type ChaosConfig = Readonly<z.infer<typeof chaosConfigSchema>>;

/** `mnist-ddp keygen`: a new cluster key directory. */
export const keygenConfigSchema = z.object({ out: requiredPath });
export type KeygenConfig = Readonly<z.infer<typeof keygenConfigSchema>>;

/** A worker process: it needs only the coordinator's address; the run's config arrives in the welcome message. */
export const workerConfigSchema = z.object({
  coordinator: endpointString.default('tcp://127.0.0.1:5555'),
  /** Interface the ring inbox binds (port chosen by the OS). */
  bindHost: z.string().min(1).default('0.0.0.0'),
  /**
   * Address other workers use to reach this one; default: --bind-host when it names one interface, else the address
   * of the interface that routes to the coordinator (worker/advertise.ts).
   */
  advertiseHost: z.string().min(1).optional(),
  /** Ports the ring inbox may bind, "first-last" inclusive (for firewalls); default: one the OS picks. */
  ringPorts: portRange.optional(),
  ringTimeoutMs: int(100).max(MAX_RING_TIMEOUT_MS, `at most ${MAX_RING_TIMEOUT_MS} ms: after a lost peer, survivors must answer the coordinator's ${REQUEST_TIMEOUT_MS / 1000} s requests`).default(10_000),
  /** Exit (instead of hanging) when the coordinator is silent this long. */
  coordinatorTimeoutMs: int(1000).default(120_000),
  backend,
  dataDir: z.string().optional(),
  /** Loopback unless asked: a Prometheus on another machine needs 0.0.0.0 or this host's address. */
  metricsHost: z.string().min(1).default('127.0.0.1'),
  /** Base port for /metrics; a worker serves on base + its pm2 instance number. 0 = an ephemeral port. */
  metricsPort: port.default(0),
  metrics: bool.default(true),
  /** After a run ends (or the coordinator is away), say hello again instead of exiting: for pm2-managed workers. */
  stayAlive: bool.default(false),
  ...transportSecurity,
});
export type WorkerConfig = Readonly<z.infer<typeof workerConfigSchema>>;

/** `mnist-ddp coordinator`: a run's config plus where to listen and how to operate under pm2. */
export const coordinatorConfigSchema = trainConfigSchema.extend({
  /** ROUTER address workers connect to. Loopback unless asked: workers on other machines need tcp://0.0.0.0:5555. */
  bind: endpointString.or(z.string().regex(/^tcp:\/\/\*:\d+$/)).default('tcp://127.0.0.1:5555'),
  /** Workers to wait for before the first step; more may join later (elastic). */
  minWorkers: int(1).default(2),
  joinTimeoutMs: int(1000).default(600_000),
  stepTimeoutMs: int(1000).default(60_000),
  heartbeatTimeoutMs: int(500).default(5_000),
  /** With every worker gone, how long recovery waits for a joiner before failing the run. */
  rejoinTimeoutMs: int(1000).default(60_000),
  /** Without --resume, continue from <run-dir>/checkpoint when it exists and the run has no eval.json (pm2 restarts). */
  autoResume: bool.default(true),
  digestEvery: int(0).default(50),
  elastic: bool.default(true),
  /** Loopback unless asked, as the worker's metricsHost. */
  metricsHost: z.string().min(1).default('127.0.0.1'),
  coordinatorMetricsPort: port.default(9400),
  targetsFile: z.string().optional(),
  /** After the run: exit (true) or keep serving /metrics and refusing late joiners (false, for pm2). */
  exitWhenDone: bool.default(true),
  ...transportSecurity,
});
export type CoordinatorConfig = Readonly<z.infer<typeof coordinatorConfigSchema>>;
