import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/mnist-ddp.js', import.meta.url));

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface ProcessOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
  onSpawn?: (child: ChildProcess) => void;
}

/** Runs `command args` as a real process and collects its output, with a hard deadline (default 120 s). */
export function runProcess(command: string, args: string[], opts: ProcessOptions = {}): Promise<CliResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} did not finish within ${timeoutMs} ms\n${stderr.slice(-2000)}`));
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    opts.onSpawn?.(child);
  });
}

/** Runs the shipped CLI (bin/mnist-ddp.js → dist/) as a real process, with a hard deadline. */
export function runCli(args: string[], opts: Omit<ProcessOptions, 'cwd'> = {}): Promise<CliResult> {
  return runProcess(process.execPath, [BIN, ...args], { ...opts, env: { ...process.env, MNIST_DDP_LOG_LEVEL: 'warn', ...opts.env } });
}

export function lastJson<T>(stdout: string): T {
  return JSON.parse(stdout.trim().split('\n').pop() ?? '') as T;
}

/** A process started in the background: its output so far (tails, bounded), its exit, and a way to stop it. */
export interface BackgroundProcess {
  name: string;
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** stdout and stderr interleaved as they arrived. */
  output(): string;
  /** Resolves with the exit code (null after a signal). */
  exited: Promise<number | null>;
  running(): boolean;
  /** SIGTERM, then SIGKILL after `graceMs` (0: SIGKILL at once); resolves when the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Starts `command args` without waiting for it (servers, a coordinator, workers). Each output stream keeps its last
 * `keepChars` characters: enough to explain a failure, bounded for a long run.
 */
export function startProcess(
  name: string,
  command: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; keepChars?: number } = {},
): BackgroundProcess {
  const keepChars = opts.keepChars ?? 100_000;
  const child = spawn(command, args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const text = { stdout: '', stderr: '', output: '' };
  const keep = (stream: 'stdout' | 'stderr') => (c: Buffer): void => {
    text[stream] = (text[stream] + c.toString()).slice(-keepChars);
    text.output = (text.output + c.toString()).slice(-keepChars);
  };
  child.stdout.on('data', keep('stdout'));
  child.stderr.on('data', keep('stderr'));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const running = (): boolean => child.exitCode === null && child.signalCode === null;
  return {
    name,
    child,
    stdout: () => text.stdout,
    stderr: () => text.stderr,
    output: () => text.output,
    exited,
    running,
    async stop(graceMs = 3_000) {
      if (!running()) return;
      child.kill(graceMs > 0 ? 'SIGTERM' : 'SIGKILL');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** `proc`'s exit code, or a rejection naming the process and its output's tail when it is still running after `ms`. */
export async function exitWithin(proc: BackgroundProcess, ms: number): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${proc.name} still running after ${ms} ms:\n${proc.output().slice(-3000)}`)), ms)));
  try {
    return await Promise.race([proc.exited, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The shipped CLI (bin/mnist-ddp.js) in the background, logging at warn unless `env` says otherwise. */
export function startCli(name: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; keepChars?: number } = {}): BackgroundProcess {
  return startProcess(name, process.execPath, [BIN, ...args], { ...opts, env: { MNIST_DDP_LOG_LEVEL: 'warn', ...opts.env } });
}
