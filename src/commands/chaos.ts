import { execFileSync } from 'node:child_process';
import { durationMs, type ChaosConfig } from '../shared/core/config.js';
import { MnistDdpError } from '../shared/core/errors.js';
import type { Io } from '../shared/core/io.js';

/** One signal sent: what, to whom, when (ms since the start). */
export interface ChaosEvent {
  at: number;
  pid: number;
  signal: string;
}

/** xorshift32: the same --seed picks the same victims at the same jittered times. */
function random(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 2 ** 32;
  };
}

/** The pids to pick from now: --pids as given (those still alive), or the online processes of --pm2-app. */
function candidates(config: ChaosConfig): number[] {
  if (config.pm2App) {
    const list = JSON.parse(execFileSync('npx', ['pm2', 'jlist'], { encoding: 'utf8' })) as Array<{ name: string; pid: number; pm2_env?: { status?: string } }>;
    return list.filter((p) => p.name === config.pm2App && p.pid > 0 && p.pm2_env?.status === 'online').map((p) => p.pid);
  }
  return config.pids.map(Number).filter((pid) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  });
}

/**
 * `mnist-ddp chaos --kill-every 10s --pm2-app worker`: signals one random process of the set every interval
 * (±50 % jitter) until --duration or --max-kills, printing each event. The coordinator's history.jsonl records what
 * each survived failure cost (type "recovery").
 */
export async function runChaos(config: ChaosConfig, io: Io): Promise<ChaosEvent[]> {
  if (!config.pm2App && config.pids.length === 0) {
    throw new MnistDdpError('CONFIG_INVALID', 'chaos needs processes to pick from: --pids 123,456 or --pm2-app worker', { key: 'pids' });
  }
  const next = random(config.seed);
  const every = durationMs(config.killEvery);
  const end = Date.now() + durationMs(config.duration);
  const t0 = Date.now();
  const events: ChaosEvent[] = [];
  io.stdout(config.json ? JSON.stringify({ type: 'start', seed: config.seed, killEveryMs: every }) : `chaos: seed ${config.seed}, ${config.signal} every ${config.killEvery} (±50 %)`);
  while (Date.now() < end && (config.maxKills === undefined || events.length < config.maxKills)) {
    await new Promise((r) => setTimeout(r, Math.min(every * (0.5 + next()), Math.max(0, end - Date.now()))));
    if (Date.now() >= end) break;
    const pids = candidates(config);
    if (pids.length === 0) continue;
    const pid = pids[Math.floor(next() * pids.length)]!;
    process.kill(pid, config.signal);
    if (config.signal === 'SIGSTOP') setTimeout(() => process.kill(pid, 'SIGCONT'), durationMs(config.thawAfter));
    const event = { at: Date.now() - t0, pid, signal: config.signal };
    events.push(event);
    io.stdout(config.json ? JSON.stringify({ type: 'signal', ...event }) : `${(event.at / 1000).toFixed(1)} s: ${config.signal} pid ${pid}`);
  }
  return events;
}
