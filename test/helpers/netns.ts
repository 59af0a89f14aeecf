import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startProcess, type BackgroundProcess } from './cli.js';
import { delayerCounters, delayerUnavailable, iptablesIn, delayerAlive, queueRule, startDelayer, waitGoneSync, type Delayer, type DelayCounters, type DelayOptions } from './netdelay/delayer.js';

export type { DelayCounters, DelayOptions } from './netdelay/delayer.js';

const execFileAsync = promisify(execFile);
const BIN = fileURLToPath(new URL('../../bin/mnist-ddp.js', import.meta.url));

/**
 * Why network namespaces cannot be made here, or undefined when they can: the multi-host tests (issue #16) need root
 * and iproute2, and create and delete a probe namespace to be sure the kernel allows it.
 */
export function namespacesUnavailable(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces are Linux-only (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'network namespaces need root (this process runs as uid ' + String(process.getuid?.()) + ')';
  if (spawnSync('ip', ['-V']).status !== 0) return "iproute2's `ip` is not on PATH (apt-get install iproute2)";
  const probe = `mddp-probe-${process.pid}`;
  const add = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (add.status !== 0) return `\`ip netns add\` failed: ${add.stderr.trim()}`;
  spawnSync('ip', ['netns', 'del', probe]);
  return undefined;
}

/**
 * Why `lab.delay()` cannot work here, or undefined when it can: namespaces (above), iptables-legacy with the NFQUEUE
 * target, and the delayer built from test/helpers/netdelay/netdelay.c (a C compiler and libnetfilter-queue-dev).
 * Our machines' kernels have no sch_netem, hence a userspace queue for delay and loss.
 */
export function netDelayUnavailable(): string | undefined {
  return namespacesUnavailable() ?? delayerUnavailable();
}

function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')} failed (status ${r.status}): ${r.stderr.trim()}`);
}

export interface LabHost {
  /** Short name given by the test (coordinator, w1, …). */
  name: string;
  /** The network namespace the host's processes run in. */
  ns: string;
  /** Its address on the lab's bridge. */
  address: string;
  /** Its veth end on the bridge side (in the bridge's namespace): setting it down cuts the host off. */
  bridgePort: string;
}

export interface LabOptions {
  /**
   * Extra interfaces made in each host before its bridge link, like a docker0 ahead of eth0: an address that routes
   * nowhere useful, listed first by os.networkInterfaces().
   */
  decoyInterface?: boolean;
}

/**
 * A small LAN of namespaces: every host is its own network namespace with one veth link to a bridge that lives in a
 * namespace of its own, on a private /24 that exists only inside these namespaces (10.231.N.0/24, no default
 * route). Names carry a random tag, so parallel runs never collide. `destroy()` deletes every namespace, which
 * deletes the links in it; it also runs on process exit, so a failed or interrupted test leaves nothing behind.
 */
export class NamespaceLab {
  readonly hosts = new Map<string, LabHost>();
  private readonly tag = randomBytes(3).toString('hex');
  private readonly bridgeNs: string;
  private readonly subnet: string;
  private readonly namespaces: string[] = [];
  /** The delayer process per host name (at most one each), and the rule that feeds it. */
  private readonly delayers = new Map<string, Delayer & { rule: string[] }>();
  /** Every delayer this lab started, stopped or not: remaining() checks that none outlived it. */
  private readonly delayerPids: number[] = [];
  private readonly onExit = (): void => this.destroy();
  private destroyed = false;

  constructor(hostNames: readonly string[], options: LabOptions = {}) {
    this.bridgeNs = `mddp-${this.tag}-br`;
    this.subnet = `10.231.${randomBytes(1)[0]! % 250}`;
    process.once('exit', this.onExit);
    try {
      this.addNamespace(this.bridgeNs);
      ip('-n', this.bridgeNs, 'link', 'add', 'br0', 'type', 'bridge');
      ip('-n', this.bridgeNs, 'link', 'set', 'br0', 'up');
      hostNames.forEach((name, i) => this.addHost(name, i, options));
    } catch (err) {
      this.destroy();
      throw err;
    }
  }

  private addNamespace(ns: string): void {
    ip('netns', 'add', ns);
    this.namespaces.push(ns);
    ip('-n', ns, 'link', 'set', 'lo', 'up');
  }

  private addHost(name: string, index: number, options: LabOptions): void {
    const ns = `mddp-${this.tag}-${index}`;
    const address = `${this.subnet}.${index + 1}`;
    const bridgePort = `p${index}`;
    this.addNamespace(ns);
    if (options.decoyInterface) {
      // A veth pair whose other end stays in the same namespace (this kernel has no dummy links): up, addressed, and
      // leading nowhere.
      ip('-n', ns, 'link', 'add', 'decoy0', 'type', 'veth', 'peer', 'name', 'decoy1');
      ip('-n', ns, 'addr', 'add', `172.31.${index}.1/24`, 'dev', 'decoy0');
      ip('-n', ns, 'link', 'set', 'decoy1', 'up');
      ip('-n', ns, 'link', 'set', 'decoy0', 'up');
    }
    // Made in the host's namespace, then one end moved to the bridge's: names only need to be unique per namespace.
    ip('-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', bridgePort);
    ip('-n', ns, 'link', 'set', bridgePort, 'netns', this.bridgeNs);
    ip('-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0');
    ip('-n', ns, 'link', 'set', 'eth0', 'up');
    ip('-n', this.bridgeNs, 'link', 'set', bridgePort, 'master', 'br0');
    ip('-n', this.bridgeNs, 'link', 'set', bridgePort, 'up');
    this.hosts.set(name, { name, ns, address, bridgePort });
  }

  host(name: string): LabHost {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no host ${name} in this lab (${[...this.hosts.keys()].join(', ')})`);
    return h;
  }

  /**
   * Sets `name`'s link down (its bridge-side veth: the host's eth0 loses carrier) or up again. The host's TCP then
   * fails locally and retries every half second, without backing off.
   */
  setLink(name: string, up: boolean): void {
    ip('-n', this.bridgeNs, 'link', 'set', this.host(name).bridgePort, up ? 'up' : 'down');
  }

  /**
   * Cuts `name` off behind its link, or reconnects it: its bridge port leaves the bridge, so the host keeps carrier and
   * its frames are lost further on, as when a switch or a cable between switches fails. Unlike setLink, the host's
   * own TCP sees nothing local and backs its retransmissions off (to minutes), as it would on a real network.
   */
  partition(name: string, cut: boolean): void {
    ip('-n', this.bridgeNs, 'link', 'set', this.host(name).bridgePort, ...(cut ? ['nomaster'] : ['master', 'br0']));
  }

  /** Shapes `name`'s outgoing traffic with a token bucket (tc tbf), e.g. rate '1gbit'. */
  shape(name: string, rate: string, burst = '256kb', latency = '20ms'): void {
    execFileSync('tc', ['-n', this.host(name).ns, 'qdisc', 'add', 'dev', 'eth0', 'root', 'tbf', 'rate', rate, 'burst', burst, 'latency', latency], { stdio: ['ignore', 'ignore', 'pipe'] });
  }

  /** Removes `name`'s shaping (its root qdisc goes back to the default). */
  unshape(name: string): void {
    execFileSync('tc', ['-n', this.host(name).ns, 'qdisc', 'del', 'dev', 'eth0', 'root'], { stdio: ['ignore', 'ignore', 'pipe'] });
  }

  /**
   * Delays (and optionally drops) the IPv4 packets `name` receives on its lab link, eth0 (or sends, with direction
   * 'egress': see DelayDirection for why ingress is the default). The delayer (netdelay.c) runs in the host's
   * namespace, and an iptables-legacy rule there queues those packets to it; resolves once both are in place. A
   * round trip between two delayed hosts grows by both delays; a `shape()` token bucket limits the sender's egress,
   * before the receiver's delay. One delay per host: undelay() first to change it.
   */
  async delay(name: string, options: DelayOptions): Promise<void> {
    const { ns } = this.host(name);
    if (this.destroyed) throw new Error(`lab destroyed: cannot delay ${name}`);
    if (this.delayers.has(name)) throw new Error(`${name} is already delayed: undelay() it first`);
    const delayer = await startDelayer(ns, `netdelay ${name}`, options);
    const { proc } = delayer;
    if (proc.child.pid !== undefined) this.delayerPids.push(proc.child.pid);
    if (this.destroyed) {
      await proc.stop(0);
      throw new Error(`lab destroyed while ${name}'s delayer started`);
    }
    const rule = queueRule('eth0', options.direction ?? 'ingress');
    this.delayers.set(name, { ...delayer, rule });
    try {
      iptablesIn(ns, '-A', ...rule);
    } catch (err) {
      this.delayers.delete(name);
      await proc.stop(0);
      throw err;
    }
  }

  /**
   * Ends `name`'s delay: the rule goes first (no new packets are queued), then the delayer accepts what it holds and
   * exits. Resolves with its counters; rejects when it had died already (its packets then passed undelayed).
   */
  async undelay(name: string): Promise<DelayCounters> {
    const delayer = this.delayers.get(name);
    if (!delayer) throw new Error(`${name} is not delayed`);
    this.delayers.delete(name);
    const { proc, rule, closed } = delayer;
    iptablesIn(this.host(name).ns, '-D', ...rule);
    const diedEarly = !proc.running();
    await proc.stop(2_000);
    await closed;
    const counters = delayerCounters(proc);
    if (diedEarly || !counters) throw new Error(`netdelay on ${name} had exited before undelay (code ${proc.child.exitCode}, signal ${proc.child.signalCode}): ${proc.output().slice(-2000)}`);
    return counters;
  }

  /** `command args` as a process inside `name`'s namespace. */
  startIn(name: string, label: string, command: string, args: string[], env: NodeJS.ProcessEnv = {}): BackgroundProcess {
    return startProcess(label, 'ip', ['netns', 'exec', this.host(name).ns, command, ...args], { env });
  }

  /** The shipped CLI (bin/mnist-ddp.js) as a process inside `name`'s namespace, logging at warn unless told otherwise. */
  startCli(name: string, label: string, args: string[], env: NodeJS.ProcessEnv = {}): BackgroundProcess {
    return this.startIn(name, label, process.execPath, [BIN, ...args], { MNIST_DDP_LOG_LEVEL: 'warn', ...env });
  }

  /** GETs `url` from inside `name`'s namespace (as a Prometheus on that host would); resolves with the HTTP status. */
  async fetchFrom(name: string, url: string, timeoutMs = 5_000): Promise<number> {
    const script = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(${timeoutMs}) }).then((r) => r.text().then(() => console.log(r.status)), (e) => { console.log(0); console.error(String(e.cause ?? e)); })`;
    const { stdout } = await execFileAsync('ip', ['netns', 'exec', this.host(name).ns, process.execPath, '-e', script], { encoding: 'utf8', timeout: timeoutMs + 5_000 });
    return Number(stdout.trim());
  }

  /**
   * Namespaces of this lab that still exist, and its delayer processes still alive (`netdelay pid N`): empty after
   * destroy. A live process would keep a deleted namespace, and its links, in existence.
   */
  remaining(): string[] {
    const listed = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    const namespaces = this.namespaces.filter((ns) => listed.split('\n').some((line) => line.split(' ')[0] === ns));
    const delayers = this.delayerPids.filter(delayerAlive).map((pid) => `netdelay pid ${pid}`);
    return [...namespaces, ...delayers];
  }

  /**
   * Kills the delayers (held packets die with the namespaces; SIGKILL, and a wait for them to go, because this also
   * runs synchronously on exit), then deletes every namespace of the lab, and with them every link and iptables rule
   * in them. Safe to call twice.
   */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    process.off('exit', this.onExit);
    for (const { proc } of this.delayers.values()) {
      if (proc.running()) proc.child.kill('SIGKILL');
      if (proc.child.pid !== undefined) waitGoneSync(proc.child.pid, 2_000);
    }
    this.delayers.clear();
    for (const ns of this.namespaces.reverse()) spawnSync('ip', ['netns', 'del', ns]);
  }
}
