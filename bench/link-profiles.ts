/**
 * The ring all-reduce between hosts on emulated links (issue #16): each rank a process in its own network namespace
 * of a NamespaceLab (test/helpers/netns.ts), linked by a bridge.
 *   sudo npx tsx bench/link-profiles.ts [--json] [--ranks 2,3,4] [--rounds 2] [--profiles full,1g,100m]
 * Needs root, iptables-legacy and libnetfilter-queue-dev (the lab's delayer); says why and exits 1 without them.
 *
 * Profiles, the same on every host's link:
 * - full: the bare veth pair and bridge (no shaping, no delay);
 * - 1g: tc tbf 1 Gbit/s (burst 16 KiB) on each host's egress, 0.5 ms on each host's ingress;
 * - 100m: tbf 100 Mbit/s (burst 4 KiB), 10 ms on ingress, 0.1 % of arriving packets dropped (seeded).
 * One hop (rank → right neighbour) thus has the profile's one-way delay, and a round trip two of them.
 *
 * Sizes: the all-reduce buffers of `cnn` and `cnn-large` (paramLayout's bufferLength: parameters, batch-norm moving
 * statistics, and the two scalars that ride along). The ring runs over CURVE, as between real hosts, on bare rank
 * processes (no tfjs loaded). Per iteration: a barrier (an all-reduce of 2 floats), then the timed all-reduce;
 * an iteration counts as its slowest rank's time (bench/allreduce.ts does the same). Every round's p50 per
 * (ranks, size, profile) is reported; rounds repeat every profile in turn on the same ring.
 *
 * Per profile and ring size the link itself is measured too, between the first two hosts, while the ring is idle:
 * TCP round trip (1-byte ping-pong, p50) and one bulk TCP flow's rate; and the delayers' late releases.
 *
 * Then, per profile, the least-squares fit of t = 2(N−1)·α + 2(N−1)/N · bytes/β over every round's p50s
 * (α: per-hop latency, β: bandwidth), with R² and each point's residual.
 *
 * All ranks, delayers and the kernel's packet processing share the machine's cores (2 on our CI machines): keep N ≤ 4.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { lastJson } from '../test/helpers/cli.js';
import { NamespaceLab, netDelayUnavailable, type DelayCounters, type DelayOptions } from '../test/helpers/netns.js';
import { untilOutput } from '../test/helpers/process-output.js';
import { flag, median, PEER_TIMEOUT_MS, quantile } from './common.js';

interface Size { name: string; floats: number }
interface Profile { name: string; description: string; shape?: { rate: string; burst: string }; delay?: DelayOptions }
interface Plan { label: string; sizes: Array<Size & { warmup: number; iterations: number }> }

type ParentToRank =
  | { kind: 'peers'; peers: string[]; keys: string[] }
  | { kind: 'measure'; plan: Plan }
  | { kind: 'close' };
type RankToParent =
  | { kind: 'endpoint'; rank: number; endpoint: string; publicKey: string }
  | { kind: 'connected'; rank: number }
  | { kind: 'timings'; rank: number; label: string; timings: Record<string, number[]> };

const PROFILES: readonly Profile[] = [
  { name: 'full', description: 'veth + bridge, unshaped' },
  { name: '1g', description: 'tbf 1 Gbit/s, 0.5 ms per hop', shape: { rate: '1gbit', burst: '16kb' }, delay: { ms: 0.5 } },
  { name: '100m', description: 'tbf 100 Mbit/s, 10 ms per hop, 0.1 % loss', shape: { rate: '100mbit', burst: '4kb' }, delay: { ms: 10, lossPercent: 0.1, seed: 7 } },
];

/** Warm-up and timed iterations per size: fewer on the slow profile, whose large all-reduce takes ~0.3 s. */
function planFor(profile: Profile, sizes: readonly Size[], round: number): Plan {
  const slow = profile.name === '100m';
  return {
    label: `${profile.name}#${round}`,
    sizes: sizes.map((s) => ({ ...s, warmup: slow ? 3 : 10, iterations: s.floats > 100_000 ? (slow ? 15 : 40) : (slow ? 30 : 100) })),
  };
}

// ---------------------------------------------------------------- rank process

async function rank(rankIndex: number, worldSize: number, address: string): Promise<void> {
  const [{ openRingInbox, RingAllReducer }, { newKeyPair }] = await Promise.all([
    import('../src/worker/ring/ring-allreduce.js'), import('../src/shared/security/keys.js'),
  ]);
  const send = (m: RankToParent): void => void process.send?.(m);
  const messages: ParentToRank[] = [];
  let wake: (() => void) | undefined;
  process.on('message', (m) => {
    messages.push(m as ParentToRank);
    wake?.();
  });
  process.on('disconnect', () => process.exit(1)); // the parent is gone: nothing left to report to
  const next = async (): Promise<ParentToRank> => {
    while (messages.length === 0) await new Promise<void>((resolve) => (wake = resolve));
    return messages.shift()!;
  };

  const keyPair = newKeyPair();
  // The inbox admits its own key until connect() hands it the left neighbour's.
  const inbox = await openRingInbox(`tcp://${address}:*`, { curve: { keyPair, allowKey: keyPair.publicKey } });
  send({ kind: 'endpoint', rank: rankIndex, endpoint: inbox.endpoint, publicKey: keyPair.publicKey });
  const peersMessage = await next();
  if (peersMessage.kind !== 'peers') throw new Error(`rank ${rankIndex}: expected peers, got ${peersMessage.kind}`);
  const ring = await RingAllReducer.connect(
    { rank: rankIndex, worldSize, generation: 1, peers: peersMessage.peers, timeoutMs: PEER_TIMEOUT_MS },
    { inbox, curve: { keyPair, peerKeys: peersMessage.keys } },
  );
  send({ kind: 'connected', rank: rankIndex });
  let step = 0;
  const barrierBuffer = new Float32Array(2);
  for (;;) {
    const m = await next();
    if (m.kind === 'close') break;
    if (m.kind !== 'measure') continue;
    const timings: Record<string, number[]> = {};
    for (const size of m.plan.sizes) {
      const buf = ring.allocate(size.floats);
      const samples: number[] = [];
      for (let i = 0; i < size.warmup + size.iterations; i++) {
        buf.fill(rankIndex + 1);
        await ring.allReduce(barrierBuffer, ++step);
        const t0 = performance.now();
        const sum = await ring.allReduce(buf, ++step);
        if (i >= size.warmup) samples.push(performance.now() - t0);
        // Ranks contribute 1…N: every element must be N(N+1)/2.
        const expected = (worldSize * (worldSize + 1)) / 2;
        if (sum[0] !== expected || sum[size.floats - 1] !== expected) throw new Error(`rank ${rankIndex} ${m.plan.label} ${size.name}: wrong sum ${sum[0]}`);
      }
      timings[size.name] = samples;
    }
    send({ kind: 'timings', rank: rankIndex, label: m.plan.label, timings });
  }
  await ring.close();
  process.disconnect();
}

// ---------------------------------------------------------------- parent

const PROBE = fileURLToPath(new URL('../test/helpers/netdelay/net-probe.ts', import.meta.url));
const SELF = fileURLToPath(import.meta.url);
const LINK_PORT = 7400;

interface LinkCheck { rttP50Ms: number; bulkMbits: number }
interface ProfileRun {
  ranks: number; profile: string; round: number;
  /** Per size: the slowest rank's time of every timed iteration. */
  iterations: Record<string, number[]>;
  link: LinkCheck;
  /** Over every host's delayer: mean of their mean late releases, the worst one, packets dropped on purpose, and drops nobody asked for. */
  delayers?: { lateMeanUs: number; lateMaxUs: number; dropped: number; unplannedDrops: number };
}

async function sizesFromZoo(): Promise<Size[]> {
  const [{ buildModel }, { paramLayout }] = await Promise.all([import('../src/shared/model/zoo.js'), import('../src/shared/model/layout.js')]);
  return (['cnn', 'cnn-large'] as const).map((name) => ({ name, floats: paramLayout(buildModel(name, { seed: 1 })).bufferLength }));
}

/** Round trip and one bulk flow from the first host to the second, through whatever the profile put on the links. */
async function checkLink(lab: NamespaceLab, a: string, b: string, bulkBytes: number): Promise<LinkCheck> {
  const target = lab.host(b).address;
  const run = async (host: string, role: string, args: (string | number)[], until?: RegExp) => {
    const proc = lab.startIn(host, `${role}@${host}`, process.execPath, ['--import', 'tsx', PROBE, role, target, ...args.map(String)]);
    if (until) await untilOutput(proc, until, `${role} ready`, 30_000);
    return proc;
  };
  const echo = await run(b, 'tcp-echo', [LINK_PORT], /listening/);
  const sink = await run(b, 'tcp-sink', [LINK_PORT + 1], /listening/);
  try {
    const ping = await run(a, 'tcp-ping', [LINK_PORT, 40], /rttMs/);
    const bulk = await run(a, 'tcp-bulk', [LINK_PORT + 1, bulkBytes], /seconds/);
    await Promise.all([ping.exited, bulk.exited]);
    const { rttMs } = lastJson<{ rttMs: number[] }>(ping.stdout());
    const { bytes, seconds } = lastJson<{ bytes: number; seconds: number }>(bulk.stdout());
    return { rttP50Ms: median(rttMs.slice(5)), bulkMbits: (bytes * 8) / seconds / 1e6 };
  } finally {
    await Promise.all([echo.stop(0), sink.stop(0)]);
  }
}

async function applyProfile(lab: NamespaceLab, hosts: readonly string[], profile: Profile): Promise<void> {
  for (const h of hosts) {
    if (profile.shape) lab.shape(h, profile.shape.rate, profile.shape.burst, '100ms');
    if (profile.delay) await lab.delay(h, profile.delay);
  }
}

async function removeProfile(lab: NamespaceLab, hosts: readonly string[], profile: Profile): Promise<ProfileRun['delayers']> {
  const counters: DelayCounters[] = [];
  for (const h of hosts) {
    if (profile.delay) counters.push(await lab.undelay(h));
    if (profile.shape) lab.unshape(h);
  }
  if (counters.length === 0) return undefined;
  return {
    lateMeanUs: counters.reduce((s, c) => s + c.lateMeanUs, 0) / counters.length,
    lateMaxUs: Math.max(...counters.map((c) => c.lateMaxUs)),
    dropped: counters.reduce((s, c) => s + c.dropped, 0),
    unplannedDrops: counters.reduce((s, c) => s + c.overruns + c.kernelQueueDropped + c.kernelUserDropped, 0),
  };
}

function waitFor<K extends RankToParent['kind']>(children: ChildProcess[], kind: K): Promise<Array<Extract<RankToParent, { kind: K }>>> {
  return Promise.all(children.map((c, i) => new Promise<Extract<RankToParent, { kind: K }>>((resolve, reject) => {
    const onMessage = (m: RankToParent): void => {
      if (m.kind !== kind) return;
      c.off('message', onMessage);
      c.off('exit', onExit);
      resolve(m as Extract<RankToParent, { kind: K }>);
    };
    const onExit = (code: number | null): void => reject(new Error(`rank ${i} exited (${code}) while the bench waited for '${kind}'`));
    c.on('message', onMessage);
    c.once('exit', onExit);
  })));
}

async function measureRing(worldSize: number, sizes: Size[], profiles: readonly Profile[], rounds: number, log: (line: string) => void): Promise<ProfileRun[]> {
  const hosts = Array.from({ length: worldSize }, (_, i) => `r${i}`);
  const lab = new NamespaceLab(hosts);
  const children: ChildProcess[] = [];
  try {
    for (const [i, h] of hosts.entries()) {
      children.push(spawn('ip', ['netns', 'exec', lab.host(h).ns, process.execPath, '--import', 'tsx', SELF, '--rank', String(i), '--world', String(worldSize), '--address', lab.host(h).address], {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, MNIST_DDP_LOG_LEVEL: 'warn' },
      }));
    }
    const endpoints = (await waitFor(children, 'endpoint')).sort((x, y) => x.rank - y.rank);
    for (const c of children) c.send({ kind: 'peers', peers: endpoints.map((e) => e.endpoint), keys: endpoints.map((e) => e.publicKey) } satisfies ParentToRank);
    await waitFor(children, 'connected');

    const runs: ProfileRun[] = [];
    for (let round = 1; round <= rounds; round++) {
      for (const profile of profiles) {
        await applyProfile(lab, hosts, profile);
        let delayers: ProfileRun['delayers'];
        let link: LinkCheck;
        let iterations: Record<string, number[]>;
        try {
          link = await checkLink(lab, hosts[0]!, hosts[1]!, profile.name === '100m' ? 8e6 : 64e6);
          const plan = planFor(profile, sizes, round);
          const reports = waitFor(children, 'timings');
          for (const c of children) c.send({ kind: 'measure', plan } satisfies ParentToRank);
          const timings = (await reports).map((r) => r.timings);
          iterations = Object.fromEntries(sizes.map((s) => [s.name, timings[0]![s.name]!.map((_, i) => Math.max(...timings.map((t) => t[s.name]![i]!)))]));
        } finally {
          delayers = await removeProfile(lab, hosts, profile);
        }
        const run: ProfileRun = { ranks: worldSize, profile: profile.name, round, iterations, link, ...(delayers && { delayers }) };
        runs.push(run);
        log(`N=${worldSize} ${profile.name.padEnd(4)} round ${round}: ` + sizes.map((s) => `${s.name} p50 ${fmt(median(iterations[s.name]!))} ms (p90 ${fmt(quantile(iterations[s.name]!, 0.9))})`).join(', ') +
          ` | link RTT p50 ${fmt(link.rttP50Ms, 3)} ms, bulk ${fmt(link.bulkMbits, 0)} Mbit/s` +
          (delayers ? ` | delayers late mean ${fmt(delayers.lateMeanUs, 0)} µs (max ${fmt(delayers.lateMaxUs / 1000, 1)} ms), dropped ${delayers.dropped}, unplanned drops ${delayers.unplannedDrops}` : ''));
      }
    }
    for (const c of children) c.send({ kind: 'close' } satisfies ParentToRank);
    await Promise.all(children.map((c) => new Promise((resolve) => (c.exitCode !== null ? resolve(c.exitCode) : c.once('exit', resolve)))));
    return runs;
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    lab.destroy();
  }
}

interface Fit { profile: string; alphaMs: number; betaMBs: number; r2: number; points: Array<{ ranks: number; size: string; round: number; measuredMs: number; fittedMs: number; residualPct: number }> }

/** Least squares, no intercept: t = a·x1 + b·x2 with x1 = 2(N−1), x2 = 2(N−1)/N · bytes; α = a, β = 1/b. */
function fitProfile(profile: string, runs: ProfileRun[], sizes: Size[]): Fit {
  const rows = runs.filter((r) => r.profile === profile).flatMap((r) => sizes.map((s) => {
    const n = r.ranks;
    return { ranks: n, size: s.name, round: r.round, x1: 2 * (n - 1), x2: ((2 * (n - 1)) / n) * s.floats * 4, t: median(r.iterations[s.name]!) };
  }));
  let s11 = 0, s12 = 0, s22 = 0, s1t = 0, s2t = 0;
  for (const p of rows) {
    s11 += p.x1 * p.x1; s12 += p.x1 * p.x2; s22 += p.x2 * p.x2; s1t += p.x1 * p.t; s2t += p.x2 * p.t;
  }
  const det = s11 * s22 - s12 * s12;
  const a = (s1t * s22 - s2t * s12) / det;
  const b = (s2t * s11 - s1t * s12) / det;
  const mean = rows.reduce((s, p) => s + p.t, 0) / rows.length;
  let ssRes = 0, ssTot = 0;
  const points = rows.map((p) => {
    const fitted = a * p.x1 + b * p.x2;
    ssRes += (p.t - fitted) ** 2;
    ssTot += (p.t - mean) ** 2;
    return { ranks: p.ranks, size: p.size, round: p.round, measuredMs: p.t, fittedMs: fitted, residualPct: ((p.t - fitted) / p.t) * 100 };
  });
  // b is ms per byte: β in MB/s (10^6 bytes/s).
  return { profile, alphaMs: a, betaMBs: 1 / b / 1000, r2: 1 - ssRes / ssTot, points };
}

function fmt(x: number, digits = 2): string {
  return Number.isFinite(x) ? x.toFixed(digits) : String(x);
}

async function parent(): Promise<void> {
  const unavailable = netDelayUnavailable();
  if (unavailable) {
    process.stderr.write(`link-profiles: cannot build the namespace lab here: ${unavailable}\n`);
    process.exit(1);
  }
  const json = process.argv.includes('--json');
  const ranks = flag('ranks', '2,3,4').split(',').map(Number);
  const rounds = Number(flag('rounds', '2'));
  const wanted = flag('profiles', PROFILES.map((p) => p.name).join(',')).split(',');
  const profiles = PROFILES.filter((p) => wanted.includes(p.name));
  if (ranks.some((n) => !(Number.isInteger(n) && n >= 2)) || !(rounds >= 1) || profiles.length !== wanted.length) {
    throw new Error(`--ranks ${ranks.join(',')} --rounds ${rounds} --profiles ${wanted.join(',')}: expected ranks ≥ 2, rounds ≥ 1, profiles from ${PROFILES.map((p) => p.name).join(',')}`);
  }
  const log = (line: string): void => void (json ? process.stderr : process.stdout).write(`${line}\n`);
  const sizes = await sizesFromZoo();
  log(`ring over CURVE, bare rank processes; ${cpus().length} CPUs shared by every rank, delayer and the kernel's packet processing`);
  log(`sizes: ${sizes.map((s) => `${s.name} ${s.floats} floats (${fmt((s.floats * 4) / 1e6, 3)} MB)`).join(', ')}`);
  for (const p of profiles) log(`profile ${p.name}: ${p.description}`);

  const runs: ProfileRun[] = [];
  for (const n of ranks) runs.push(...(await measureRing(n, sizes, profiles, rounds, log)));

  const fits = profiles.map((p) => fitProfile(p.name, runs, sizes));
  log('\nfit t(N) = 2(N−1)·α + 2(N−1)/N · bytes/β over every round\'s p50:');
  for (const f of fits) {
    const worst = Math.max(...f.points.map((p) => Math.abs(p.residualPct)));
    log(`${f.profile.padEnd(4)} α ${fmt(f.alphaMs, 3)} ms per hop, β ${fmt(f.betaMBs, 1)} MB/s (${fmt((f.betaMBs * 8) / 1000, 3)} Gbit/s), R² ${fmt(f.r2, 4)}, worst residual ${fmt(worst, 1)} %`);
    for (const p of f.points) log(`       N=${p.ranks} ${p.size.padEnd(9)} round ${p.round}: measured ${fmt(p.measuredMs)} ms, fitted ${fmt(p.fittedMs)} ms (${p.residualPct >= 0 ? '+' : ''}${fmt(p.residualPct, 1)} %)`);
  }
  if (json) {
    const summary = runs.map((r) => ({
      ranks: r.ranks, profile: r.profile, round: r.round, link: r.link, delayers: r.delayers,
      p50Ms: Object.fromEntries(Object.entries(r.iterations).map(([k, v]) => [k, median(v)])),
      p90Ms: Object.fromEntries(Object.entries(r.iterations).map(([k, v]) => [k, quantile(v, 0.9)])),
    }));
    process.stdout.write(`${JSON.stringify({ transport: 'curve', cpus: cpus().length, sizes, profiles, runs: summary, fits })}\n`);
  }
}

const rankFlag = flag('rank', '');
if (rankFlag !== '') {
  await rank(Number(rankFlag), Number(flag('world', '0')), flag('address', ''));
} else {
  await parent();
}
