import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { lastJson, startProcess, type BackgroundProcess } from '../helpers/cli.js';
import { delayerAlive } from '../helpers/netdelay/delayer.js';
import { NamespaceLab, netDelayUnavailable } from '../helpers/netns.js';
import { until } from '../helpers/poll.js';
import { untilOutput } from '../helpers/process-output.js';
import { median, quantile } from '../../src/shared/core/stats.js';

// Issue #16: latency and loss for the namespace lab on a kernel without sch_netem. Real sockets between two lab
// namespaces (10.231.N.0/24, no default route), delayed by netdelay (test/helpers/netdelay/netdelay.c) behind an
// iptables-legacy NFQUEUE rule in the receiving namespace.

const UNAVAILABLE = netDelayUnavailable();
if (UNAVAILABLE) console.warn(`[netdelay.test] skipping the delay tests: ${UNAVAILABLE}`);

const PROBE = fileURLToPath(new URL('../helpers/netdelay/net-probe.ts', import.meta.url));
const LAB_HELPER = fileURLToPath(new URL('../helpers/netns.ts', import.meta.url));
const ECHO_PORT = 7100;
const UDP_PORT = 7200;
const ASK_PORT = 7201;
const PINGS = 100;

const labs: NamespaceLab[] = [];
const processes: BackgroundProcess[] = [];

function newLab(): NamespaceLab {
  const lab = new NamespaceLab(['a', 'b']);
  labs.push(lab);
  return lab;
}

function probe(lab: NamespaceLab, host: string, role: string, args: (string | number)[]): BackgroundProcess {
  const proc = lab.startIn(host, `${role}@${host}`, process.execPath, ['--import', 'tsx', PROBE, role, ...args.map(String)]);
  processes.push(proc);
  return proc;
}

/** Runs a probe role to its end and returns its last JSON line. */
async function probeResult<T>(lab: NamespaceLab, host: string, role: string, args: (string | number)[], deadlineMs = 60_000): Promise<T> {
  const proc = probe(lab, host, role, args);
  await untilOutput(proc, /^\{.*\}$/m, `${role}'s result`, deadlineMs);
  await proc.exited;
  return lastJson<T>(proc.stdout());
}

/** Median and spread of PINGS one-byte TCP round trips from a to b's echo server. */
async function pingStats(lab: NamespaceLab): Promise<{ p50: number; p10: number; p90: number; min: number; max: number }> {
  const { rttMs } = await probeResult<{ rttMs: number[] }>(lab, 'a', 'tcp-ping', [lab.host('b').address, ECHO_PORT, PINGS]);
  // The first round trips pay for the connection's and the JIT's warm-up.
  const settled = rttMs.slice(5);
  return { p50: median(settled), p10: quantile(settled, 0.1), p90: quantile(settled, 0.9), min: Math.min(...settled), max: Math.max(...settled) };
}

async function startEcho(lab: NamespaceLab): Promise<void> {
  await untilOutput(probe(lab, 'b', 'tcp-echo', [lab.host('b').address, ECHO_PORT]), /"listening"/, 'the echo server listening', 30_000);
}

/** `count` numbered datagrams from a to b; the sink's answer (what arrived, what never did). */
async function udpLoss(lab: NamespaceLab, count: number): Promise<{ received: number; missing: number[] }> {
  const sink = probe(lab, 'b', 'udp-sink', [lab.host('b').address, UDP_PORT, ASK_PORT]);
  await untilOutput(sink, /"listening"/, 'the UDP sink listening', 30_000);
  const result = await probeResult<{ received: number; missing: number[] }>(lab, 'a', 'udp-send', [lab.host('b').address, UDP_PORT, ASK_PORT, count]);
  await sink.stop(0);
  return result;
}

const nfqueueRules = (lab: NamespaceLab, host: string): string[] =>
  spawnSync('ip', ['netns', 'exec', lab.host(host).ns, 'iptables-legacy', '-w', '5', '-S'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.includes('NFQUEUE'));

describe.skipIf(UNAVAILABLE !== undefined)('delay and loss in the namespace lab (issue #16)', () => {
  afterEach(async () => {
    await Promise.all(processes.splice(0).map((p) => p.stop(0)));
    for (const lab of labs.splice(0)) {
      lab.destroy();
      expect(lab.remaining(), 'namespaces or delayers left behind').toEqual([]);
    }
  });

  it('adds the configured one-way delay on each side to a TCP round trip, keeps jitter within its bounds, and removes the rule and the delayer on undelay', async () => {
    const lab = newLab();
    await startEcho(lab);
    const base = await pingStats(lab);

    await lab.delay('a', { ms: 10 });
    await lab.delay('b', { ms: 10 });
    expect(nfqueueRules(lab, 'a')).toHaveLength(1);
    const delayed = await pingStats(lab);
    const [countersA, countersB] = [await lab.undelay('a'), await lab.undelay('b')];
    const jitterBase = await pingStats(lab);
    await lab.delay('a', { ms: 10, jitterMs: 4 });
    const jittered = await pingStats(lab);
    await lab.undelay('a');
    console.log(`[netdelay] TCP RTT ms, p50 (p10–p90, min–max): none ${base.p50.toFixed(3)} (${base.p10.toFixed(3)}–${base.p90.toFixed(3)}); ` +
      `10 ms each way ${delayed.p50.toFixed(3)} (${delayed.p10.toFixed(3)}–${delayed.p90.toFixed(3)}, ${delayed.min.toFixed(3)}–${delayed.max.toFixed(3)}); ` +
      `10 ± 4 ms one way ${jittered.p50.toFixed(3)} (${jittered.p10.toFixed(3)}–${jittered.p90.toFixed(3)}, ${jittered.min.toFixed(3)}–${jittered.max.toFixed(3)}); ` +
      `late releases a: mean ${countersA.lateMeanUs} µs, max ${countersA.lateMaxUs} µs`);

    // Never early: each packet is held at least its delay. Late by the delayer's and the endpoints' wake-ups from
    // idle: p50 measured 0.33–1.1 ms over base + 20 ms on a 2-vCPU VM (1.1 beside another training run); 5 ms leaves
    // room for a busier one.
    expect(delayed.min).toBeGreaterThanOrEqual(20);
    expect(delayed.p50 - base.p50).toBeGreaterThan(20);
    expect(delayed.p50 - base.p50).toBeLessThan(25);
    for (const c of [countersA, countersB]) {
      expect(c.received).toBeGreaterThanOrEqual(PINGS); // every ping (a) or echo (b) went through the queue
      expect(c.accepted).toBe(c.received);
      expect(c.dropped + c.overruns + c.kernelQueueDropped + c.kernelUserDropped).toBe(0);
    }
    // Undelayed again: the rule went with the delayer, and the round trip is back to its base.
    expect(nfqueueRules(lab, 'a')).toEqual([]);
    expect(jitterBase.p50).toBeLessThan(base.p50 + 2);
    // Uniform 6–14 ms one way, in order: no round trip below 6 ms, a spread of several ms between p10 and p90.
    expect(jittered.min).toBeGreaterThanOrEqual(6);
    expect(jittered.p90 - jittered.p10).toBeGreaterThan(2);
    expect(jittered.p50).toBeGreaterThan(8);
    expect(jittered.p50).toBeLessThan(15);
  });

  it('drops about the configured fraction of packets, the same ones for the same seed', async () => {
    const COUNT = 2000;
    const lab = newLab();
    const runs: Array<{ received: number; missing: number[]; dropped: number }> = [];
    for (let run = 0; run < 2; run++) {
      await lab.delay('b', { ms: 2, lossPercent: 5, seed: 42 });
      const result = await udpLoss(lab, COUNT);
      const counters = await lab.undelay('b');
      runs.push({ ...result, dropped: counters.dropped });
      expect(counters.overruns + counters.kernelQueueDropped + counters.kernelUserDropped).toBe(0);
    }
    const [first, second] = runs as [typeof runs[0], typeof runs[0]];
    console.log(`[netdelay] 5 % loss, seed 42: ${COUNT - first.received} of ${COUNT} datagrams lost (delayer dropped ${first.dropped} packets in all)`);
    // Binomial(2000, 0.05): mean 100, σ ≈ 9.7; the bounds are ±4σ, on the delayer's own count: a loaded machine can
    // also lose datagrams in the sink's socket buffer (a CI dry run lost 11 of 2 000 that way), which are not its.
    expect(first.missing.length).toBe(COUNT - first.received);
    for (const r of runs) {
      expect(r.dropped).toBeGreaterThan(60);
      expect(r.dropped).toBeLessThan(140);
      // Every datagram the delayer dropped is missing (it may also have dropped a packet or two that were not datagrams).
      expect(r.missing.length).toBeGreaterThanOrEqual(r.dropped - 3);
    }
    // The seed fixes which are dropped. The delayer draws once per IPv4 packet it sees, so a packet that is not one of
    // the datagrams shifts the draws after it (a CI dry run: the same pattern, but 8 of 100 indices moved by 4 in one
    // stretch). So: most of the lost datagrams are the same ones in both passes; two independent 5 % draws would share
    // about 5 of 100.
    const again = new Set(second.missing);
    const shared = first.missing.filter((i) => again.has(i)).length;
    expect(Math.abs(second.dropped - first.dropped)).toBeLessThanOrEqual(3);
    expect(shared, `second pass ${JSON.stringify(second.missing)} vs first ${JSON.stringify(first.missing)}`).toBeGreaterThanOrEqual(0.5 * Math.min(first.missing.length, second.missing.length));
  });

  it('a delayer dies with the process that started it, even when that process is killed outright', async () => {
    // A separate Node process makes a lab and a delay, then is SIGKILLed: no exit handler runs, so only the delayer's
    // own watch (a parent-death signal; its stdout's reader gone) can end it. Its namespaces are left behind (the kill skips the lab's cleanup) and are
    // deleted here by name.
    const script = `
      import { NamespaceLab } from ${JSON.stringify(LAB_HELPER)};
      const lab = new NamespaceLab(['a']);
      await lab.delay('a', { ms: 5 });
      console.log(JSON.stringify({ namespaces: [...lab.hosts.values()].map((h) => h.ns), pids: lab.remaining().filter((r) => r.startsWith('netdelay')) }));
      setInterval(() => {}, 1000);`;
    const owner = probeOwner(script);
    const { namespaces, pids } = JSON.parse((await untilOutput(owner, /^\{.*\}$/m, 'the lab made', 30_000))[0]) as { namespaces: string[]; pids: string[] };
    try {
      expect(pids).toHaveLength(1);
      const pid = Number(pids[0]!.split(' ').at(-1));
      owner.child.kill('SIGKILL');
      await owner.exited;
      await until(`delayer pid ${pid} gone after its parent was killed`, () => (delayerAlive(pid) ? undefined : true), 5_000);
    } finally {
      const bridge = namespaces[0]?.replace(/-\d+$/, '-br');
      for (const ns of [...namespaces, ...(bridge ? [bridge] : [])]) spawnSync('ip', ['netns', 'del', ns]);
    }
  });
});

function probeOwner(script: string): BackgroundProcess {
  const proc = startProcess('lab owner', process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script]);
  processes.push(proc);
  return proc;
}
