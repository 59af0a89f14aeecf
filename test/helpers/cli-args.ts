import { coordinatorConfigSchema, resolveConfig, workerConfigSchema } from '../../src/shared/core/config.js';

/**
 * Checks an mnist-ddp command line written somewhere other than the code (a Kubernetes manifest, a Slurm script)
 * against the real CLI: its flags against `mnist-ddp <command> --help`, its values against the config schemas the
 * CLI resolves them with. Deployment files then cannot name a flag that was renamed or give a value it refuses.
 */

/** The options a `--help` text lists: flag → whether it takes a value (`--bind <endpoint>`) or is a switch. */
export function optionsOfHelp(help: string): Map<string, boolean> {
  const options = new Map<string, boolean>();
  for (const line of (help.split('\nOptions:\n')[1] ?? '').split('\n')) {
    const entry = /^ {2}(?:-\w, )?(--[a-z][a-z0-9-]*)( <[^>]+>)?/.exec(line);
    if (entry) options.set(entry[1]!, entry[2] !== undefined);
  }
  return options;
}

export interface CommandFlag {
  flag: string;
  value?: string;
}

/**
 * Splits the arguments after the command into flags (`--x=v`, `--x v`, `--switch`), as commander would. Unknown
 * flags, a missing value, a value given to a switch and stray positional arguments are returned as errors.
 */
export function parseFlags(args: readonly string[], options: ReadonlyMap<string, boolean>): { flags: CommandFlag[]; errors: string[] } {
  const flags: CommandFlag[] = [];
  const errors: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (!arg.startsWith('--')) {
      errors.push(`unexpected argument ${JSON.stringify(arg)}`);
      continue;
    }
    const eq = arg.indexOf('=');
    const flag = eq < 0 ? arg : arg.slice(0, eq);
    const takesValue = options.get(flag);
    if (takesValue === undefined) {
      errors.push(`unknown flag ${flag}`);
      continue;
    }
    if (!takesValue) {
      if (eq >= 0) errors.push(`${flag} is a switch and takes no value`);
      flags.push({ flag });
      continue;
    }
    const value = eq >= 0 ? arg.slice(eq + 1) : args[++i];
    if (value === undefined || value === '') errors.push(`${flag} needs a value`);
    else flags.push({ flag, value });
  }
  return { flags, errors };
}

/** commander's attribute name: --metrics-port → metricsPort; --no-exit-when-done → exitWhenDone (false). */
function attribute(flag: string): { key: string; negated: boolean } {
  const negated = flag.startsWith('--no-');
  const name = flag.slice(negated ? 5 : 2);
  return { key: name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase()), negated };
}

const SCHEMAS = { coordinator: coordinatorConfigSchema, worker: workerConfigSchema } as const;

/**
 * The config the CLI would build from these flags (flags only: no MNIST_DDP_* variables, no config file). Throws the
 * CLI's own CONFIG_INVALID error for a value it would refuse.
 */
export function configOfFlags(command: keyof typeof SCHEMAS, flags: readonly CommandFlag[]): Readonly<Record<string, unknown>> {
  const values: Record<string, unknown> = {};
  for (const { flag, value } of flags) {
    const { key, negated } = attribute(flag);
    values[key] = value ?? !negated;
  }
  return resolveConfig(SCHEMAS[command], { flags: values, env: {}, file: {} });
}
