import { copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpGet } from '../helpers/http.js';
import { freePortRange } from '../helpers/net.js';
import { runPm2, stopPm2 } from '../helpers/pm2.js';
import { until } from '../helpers/poll.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

interface Pm2Process {
  name: string;
  pm_id: number;
  pid: number;
  pm2_env: { status: string; NODE_APP_INSTANCE?: number; pm_out_log_path?: string };
}

interface Health {
  role: string;
  instance: number;
  pid: number;
  env: Record<string, string>;
}

let dir = '';
let env: NodeJS.ProcessEnv = {};
let coordinatorPort = 0;
let workerBasePort = 0;

const pm2 = (...args: string[]): Promise<string> => runPm2({ cwd: dir, env }, ...args);

async function jlist(): Promise<Pm2Process[]> {
  // jlist prints one JSON array; pm2 may print daemon notices before it.
  const out = await pm2('jlist');
  return JSON.parse(out.slice(out.indexOf('['))) as Pm2Process[];
}

async function health(port: number): Promise<Health> {
  return JSON.parse((await httpGet(port, '/healthz', { timeoutMs: 2_000 })).body) as Health;
}

async function onlineWorkers(expected: number): Promise<Pm2Process[] | undefined> {
  const workers = (await jlist()).filter((p) => p.name === 'worker');
  return workers.length === expected && workers.every((p) => p.pm2_env.status === 'online') ? workers : undefined;
}

describe('pm2 ecosystem.config.js (ESM, verbatim) with placeholder processes', () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mnistddp-pm2-'));
    // Same shape as the repository: "type": "module", the ecosystem file unchanged, bin/mnist-ddp.js as entry.
    await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'pm2-fixture', type: 'module' }));
    await copyFile(join(REPO, 'ecosystem.config.js'), join(dir, 'ecosystem.config.js'));
    await mkdir(join(dir, 'bin'));
    await copyFile(join(REPO, 'test', 'helpers', 'pm2-placeholder.js'), join(dir, 'bin', 'mnist-ddp.js'));
    coordinatorPort = await freePortRange(1);
    workerBasePort = await freePortRange(3);
    const inherited = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !k.startsWith('MNIST_DDP_') && k !== 'NODE_APP_INSTANCE' && k !== 'pm_id'),
    );
    env = {
      ...inherited,
      PM2_HOME: join(dir, 'pm2-home'),
      MNIST_DDP_WORKERS: '2',
      MNIST_DDP_COORDINATOR_METRICS_PORT: String(coordinatorPort),
      MNIST_DDP_METRICS_PORT: String(workerBasePort),
    };
  });

  afterAll(async () => {
    if (!dir) return;
    await stopPm2({ cwd: dir, env });
    await rm(dir, { recursive: true, force: true });
  });

  it('starts one coordinator and MNIST_DDP_WORKERS workers with distinct instance indexes and ports', async () => {
    await pm2('start', 'ecosystem.config.js');
    const workers = await until('2 online workers', () => onlineWorkers(2));
    expect(workers.map((w) => w.pm2_env.NODE_APP_INSTANCE).sort()).toEqual([0, 1]);
    const coordinators = (await jlist()).filter((p) => p.name === 'coordinator');
    expect(coordinators).toHaveLength(1);

    const coordinator = await until('coordinator /healthz', () => health(coordinatorPort));
    expect(coordinator.role).toBe('coordinator');
    expect(coordinator.env.MNIST_DDP_COORDINATOR).toBe('tcp://127.0.0.1:5555');
    expect(coordinator.env.MNIST_DDP_TARGETS_FILE).toBe(join(dir, 'runs/prometheus/targets/mnist-ddp.json'));
    // One run directory per `pm2 start`, so pm2's restart of a dead coordinator resumes that run (issue #14).
    expect(coordinator.env.MNIST_DDP_RUN_DIR).toMatch(new RegExp(`^${join(dir, 'runs/pm2-')}\\d{8}-\\d{6}$`));
    for (const i of [0, 1]) {
      const worker = await until(`worker ${i} /healthz`, () => health(workerBasePort + i));
      expect(worker).toMatchObject({ role: 'worker', instance: i });
      expect(worker.env.MNIST_DDP_METRICS_PORT).toBe(String(workerBasePort));
    }
    const logs = await readdir(join(dir, 'pm2-home', 'logs'));
    expect(logs).toEqual(expect.arrayContaining([expect.stringMatching(/^worker-out-\d+\.log$/), expect.stringMatching(/^coordinator-out-\d+\.log$/)]));
  });

  it('scale worker 3 adds a third worker on base port + 2; scale worker 2 removes one', async () => {
    await pm2('scale', 'worker', '3');
    const three = await until('3 online workers', () => onlineWorkers(3));
    expect(three.map((w) => w.pm2_env.NODE_APP_INSTANCE).sort()).toEqual([0, 1, 2]);
    expect(new Set(three.map((w) => w.pid)).size).toBe(3);
    const third = await until('worker 2 /healthz', () => health(workerBasePort + 2));
    expect(third).toMatchObject({ role: 'worker', instance: 2 });
    expect(await pm2('ls')).toContain('worker');

    await pm2('scale', 'worker', '2');
    const two = await until('2 online workers', () => onlineWorkers(2));
    expect(two).toHaveLength(2);
    expect((await jlist()).filter((p) => p.name === 'coordinator' && p.pm2_env.status === 'online')).toHaveLength(1);
  });
});
