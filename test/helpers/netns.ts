import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startProcess, type BackgroundProcess } from './cli.js';

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

  /** The shipped CLI (bin/mnist-ddp.js) as a process inside `name`'s namespace, logging at warn unless told otherwise. */
  startCli(name: string, label: string, args: string[], env: NodeJS.ProcessEnv = {}): BackgroundProcess {
    return startProcess(label, 'ip', ['netns', 'exec', this.host(name).ns, process.execPath, BIN, ...args], { env: { MNIST_DDP_LOG_LEVEL: 'warn', ...env } });
  }

  /** GETs `url` from inside `name`'s namespace (as a Prometheus on that host would); resolves with the HTTP status. */
  async fetchFrom(name: string, url: string, timeoutMs = 5_000): Promise<number> {
    const script = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(${timeoutMs}) }).then((r) => r.text().then(() => console.log(r.status)), (e) => { console.log(0); console.error(String(e.cause ?? e)); })`;
    const { stdout } = await execFileAsync('ip', ['netns', 'exec', this.host(name).ns, process.execPath, '-e', script], { encoding: 'utf8', timeout: timeoutMs + 5_000 });
    return Number(stdout.trim());
  }

  /** Namespaces of this lab that still exist (empty after destroy). */
  remaining(): string[] {
    const listed = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    return this.namespaces.filter((ns) => listed.split('\n').some((line) => line.split(' ')[0] === ns));
  }

  /** Deletes every namespace of the lab (and so every link in them). Safe to call twice. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    process.off('exit', this.onExit);
    for (const ns of this.namespaces.reverse()) spawnSync('ip', ['netns', 'del', ns]);
  }
}
