import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startProcess, type BackgroundProcess } from '../cli.js';
import { untilOutput } from '../process-output.js';

/**
 * The NFQUEUE delayer (netdelay.c, beside this file): built on first use, started inside a lab namespace. It lives
 * with the lab rather than in scripts/ because the lab is its only user: bench/ reaches it through
 * NamespaceLab.delay() like the tests do.
 */

const SOURCE = fileURLToPath(new URL('./netdelay.c', import.meta.url));
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
/** Ignored and disposable (a clean install removes it): the binary is rebuilt whenever the source changes. */
const BUILD_DIR = join(ROOT, 'node_modules', '.cache', 'mnist-ddp-netdelay');
/** clang-16 is what CI installs; the others are what a developer machine may have. */
const COMPILERS = ['clang-16', 'clang', 'clang-14', 'cc'] as const;
const APT_HINT = 'apt-get install iptables libnetfilter-queue-dev';

/**
 * Where a host's delay applies. Ingress by default: a packet held on the sender's side still counts against its TCP
 * socket until it leaves (TCP small queues), so a delay there throttles the sender far below the link's rate (one
 * bulk TCP flow between two lab hosts: 5 Mbit/s with 10 ms on the sender's egress, 2.4 Gbit/s with 10 ms on the
 * receiver's ingress); veth hands the packet to the receiver detached from the sender's socket, so a delay on
 * arrival does not.
 */
export type DelayDirection = 'ingress' | 'egress';

export interface DelayOptions {
  /** Added to every packet the host receives on its lab link (one way; or sends, with direction 'egress'). */
  ms: number;
  /** A uniform draw in [-jitterMs, +jitterMs] on top of `ms` (never below 0); packet order is kept all the same. */
  jitterMs?: number;
  /** Percentage of those packets dropped, by a PRNG seeded with `seed`: the same traffic loses the same packets. */
  lossPercent?: number;
  /** Default 1. */
  seed?: number;
  /**
   * Hold TSO/GSO super-packets (up to 64 KiB) whole instead of having the kernel segment them first. Default: on
   * without loss (far fewer packets to handle), off with loss, so that loss applies per wire-sized packet.
   */
  gso?: boolean;
  /** Default 'ingress'. */
  direction?: DelayDirection;
  /**
   * Run the delayer at the lowest real-time priority (SCHED_FIFO 1, default on), ahead of every ordinary process,
   * as a link's hardware would be. Its verdicts also run the rest of the receiving stack for the packets they release,
   * so at 1 Gbit/s it competes with the ranks for the CPU: 0.5 ms held packets were released 2–3 ms late on average
   * without it and 0.4–0.6 ms late with it (2 vCPUs, one bulk TCP flow, ~70 k packets/s).
   */
  realtime?: boolean;
}

/** What a delayer counted, printed when it stops (SIGTERM). */
export interface DelayCounters {
  received: number;
  accepted: number;
  dropped: number;
  /** Most packets held at once. */
  maxHeld: number;
  /** How late packets were released after their due time (timer wake-up latency): mean and worst. */
  lateMeanUs: number;
  lateMaxUs: number;
  /** Receive-buffer overruns (ENOBUFS): messages lost, their packets released by a later verdict, early. */
  overruns: number;
  verdictErrors: number;
  /** The kernel's counters for the queue: dropped because it was full, or because the message to netdelay failed. */
  kernelQueueDropped: number;
  kernelUserDropped: number;
  /** What stopped it: the signal number, -1 when its stdout's reader went away; and the pid that sent the signal. */
  stopSignal: number;
  stopSenderPid: number;
}

/** A running delayer; `closed` resolves once its output is complete (its pipes closed, which can follow its exit). */
export interface Delayer {
  proc: BackgroundProcess;
  closed: Promise<void>;
}

let built: { path: string } | { error: string } | undefined;

function onPath(command: string): boolean {
  return spawnSync(command, ['--version'], { stdio: 'ignore' }).status === 0;
}

/**
 * Compiles netdelay.c into the build cache (once per source version and process), returning the binary's path or
 * why it cannot be built. The name carries the source's hash, and a build lands under a temporary name first, so
 * parallel test files never run a half-written binary.
 */
export function buildNetDelay(): { path: string } | { error: string } {
  if (built) return built;
  const source = readFileSync(SOURCE);
  const path = join(BUILD_DIR, `netdelay-${createHash('sha256').update(source).digest('hex').slice(0, 12)}`);
  if (existsSync(path)) return (built = { path });
  const compiler = COMPILERS.find(onPath);
  if (!compiler) return (built = { error: `no C compiler found (tried ${COMPILERS.join(', ')}); apt-get install clang-16` });
  mkdirSync(BUILD_DIR, { recursive: true });
  const partial = `${path}.${process.pid}.tmp`;
  const r = spawnSync(compiler, ['-O2', '-Wall', '-Wextra', '-o', partial, SOURCE, '-lnetfilter_queue'], { encoding: 'utf8' });
  if (r.status !== 0) {
    rmSync(partial, { force: true });
    const headers = /libnetfilter_queue\.h|-lnetfilter_queue|netfilter_queue/.test(r.stderr) ? ` (libnetfilter-queue-dev missing? ${APT_HINT})` : '';
    return (built = { error: `${compiler} could not build ${SOURCE}${headers}: ${r.stderr.trim().split('\n').slice(0, 3).join(' | ')}` });
  }
  renameSync(partial, path);
  return (built = { path });
}

/** The binary's path, or an error saying why there is none. */
export function netDelayBinary(): string {
  const b = buildNetDelay();
  if ('error' in b) throw new Error(`netdelay unavailable: ${b.error}`);
  return b.path;
}

/** Why `iptables-legacy` cannot be used here, or undefined. */
export function iptablesUnavailable(): string | undefined {
  const r = spawnSync('iptables-legacy', ['-V'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return `iptables-legacy is not on PATH (${APT_HINT}; this kernel has no nft queue, only xt NFQUEUE)`;
  return undefined;
}

/** Runs iptables-legacy inside `ns`. -w: the legacy lock (/run/xtables.lock) is shared by every namespace. */
export function iptablesIn(ns: string, ...args: string[]): void {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'iptables-legacy', '-w', '5', ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`iptables-legacy ${args.join(' ')} in ${ns} failed (status ${r.status}): ${(r.stderr || String(r.error ?? '')).trim()}`);
}

/**
 * The rule that sends the IPv4 packets arriving on `dev` (ingress) or leaving by it (egress) to queue 0 of that
 * namespace (queues are per namespace). --queue-bypass: should the delayer die, packets pass undelayed instead of
 * vanishing.
 */
export const queueRule = (dev: string, direction: DelayDirection): string[] =>
  [...(direction === 'ingress' ? ['INPUT', '-i'] : ['OUTPUT', '-o']), dev, '-j', 'NFQUEUE', '--queue-num', '0', '--queue-bypass'];

export function delayerArgs(options: DelayOptions): string[] {
  const loss = options.lossPercent ?? 0;
  for (const [key, value] of Object.entries({ ms: options.ms, jitterMs: options.jitterMs ?? 0, lossPercent: loss })) {
    if (!(Number.isFinite(value) && value >= 0)) throw new Error(`delay ${key} ${value}: expected a finite number ≥ 0`);
  }
  if (loss > 100) throw new Error(`delay lossPercent ${loss}: expected at most 100`);
  const gso = options.gso ?? loss === 0;
  return [
    '--delay-ms', String(options.ms), '--jitter-ms', String(options.jitterMs ?? 0), '--loss-percent', String(loss),
    '--seed', String(options.seed ?? 1), ...(gso ? [] : ['--no-gso']),
    ...(options.realtime === false ? [] : ['--rt-priority', '1']),
  ];
}

/** A running delayer in namespace `ns`, once it reported its queue bound; rejects with its error when it exits first. */
export async function startDelayer(ns: string, label: string, options: DelayOptions, deadlineMs = 5_000): Promise<Delayer> {
  const proc = startProcess(label, 'ip', ['netns', 'exec', ns, netDelayBinary(), ...delayerArgs(options)]);
  const closed = new Promise<void>((resolve) => proc.child.once('close', () => resolve()));
  try {
    await untilOutput(proc, /^ready /m, 'its queue bound', deadlineMs);
  } catch (err) {
    await proc.stop(0);
    throw err;
  }
  return { proc, closed };
}

/** The counters a stopped delayer printed last, or undefined when it was killed before printing them. */
export function delayerCounters(proc: BackgroundProcess): DelayCounters | undefined {
  const last = proc.stdout().trim().split('\n').at(-1) ?? '';
  return last.startsWith('{') ? (JSON.parse(last) as DelayCounters) : undefined;
}

/**
 * Whether delayer `pid` is still alive: a zombie (dead, not yet reaped by its parent) has already left its
 * namespaces, so it counts as gone, and so does a process that reused the pid (its name is not netdelay-*).
 */
export function delayerAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return name.startsWith('netdelay') && state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Blocks this thread up to `ms` until `pid` is gone (for synchronous teardown on exit); returns whether it is. */
export function waitGoneSync(pid: number, ms: number): boolean {
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + ms;
  while (delayerAlive(pid)) {
    if (Date.now() >= deadline) return false;
    Atomics.wait(sleeper, 0, 0, 2);
  }
  return true;
}

let probed: string | null | undefined;

/**
 * Why the delayer cannot run here, or undefined when it can: iptables-legacy with the NFQUEUE target, a compiler with
 * libnetfilter-queue's headers, and a queue that binds. Probed once per process, in a namespace of its own (the
 * caller has checked that namespaces can be made).
 */
export function delayerUnavailable(): string | undefined {
  if (probed !== undefined) return probed ?? undefined;
  const reason = iptablesUnavailable() ?? (() => {
    const b = buildNetDelay();
    return 'error' in b ? b.error : probeQueue(b.path);
  })();
  probed = reason ?? null;
  return reason;
}

function probeQueue(binary: string): string | undefined {
  const ns = `mddp-probe-nd-${process.pid}`;
  const add = spawnSync('ip', ['netns', 'add', ns], { encoding: 'utf8' });
  if (add.status !== 0) return `\`ip netns add\` failed: ${add.stderr.trim()}`;
  try {
    iptablesIn(ns, '-A', ...queueRule('lo', 'ingress'));
    const r = spawnSync('ip', ['netns', 'exec', ns, binary, '--check'], { encoding: 'utf8', timeout: 5_000 });
    if (r.status !== 0) return `netdelay --check failed (status ${r.status}): ${r.stderr.trim()}`;
    return undefined;
  } catch (err) {
    return `the NFQUEUE rule cannot be installed (kernel without CONFIG_NETFILTER_XT_TARGET_NFQUEUE or legacy iptables?): ${(err as Error).message}`;
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
}
