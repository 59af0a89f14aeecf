import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { validate as lintDockerfile } from 'dockerfile-utils';
import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { IPersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import type { IService } from 'kubernetes-models/v1/Service';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliHelp } from '../../scripts/readme-usage.js';
import { loadCoordinatorKeys, loadWorkerKeys, writeKeyDir } from '../../src/shared/security/keys.js';
import { configOfFlags, optionsOfHelp, parseFlags, type CommandFlag } from '../helpers/cli-args.js';
import { assembleKustomization, kubectlKustomize, preloadKinds, readYamlDocs, validateManifest, type ManifestDoc } from '../helpers/k8s-schema.js';

// Issue #16 item 3 ("Engines"): the container image, the Kubernetes manifests and the Slurm script cannot be run here
// (no Docker engine, no cluster, no Slurm). What can be checked offline is checked: every manifest against the
// Kubernetes API's schemas, and every name, port, path and flag they share with the product against the product.

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const K8S = join(REPO, 'deploy/k8s');
const read = (path: string): string => readFileSync(join(REPO, path), 'utf8');

const docs: ManifestDoc[] = assembleKustomization(K8S);
const podMonitor: ManifestDoc[] = readYamlDocs(join(K8S, 'optional/podmonitor.yaml'), 'optional/podmonitor.yaml');
const named = <T>(kind: string, name: string): T => {
  const found = docs.find(({ doc }) => doc.kind === kind && (doc.metadata as { name?: string } | undefined)?.name === name);
  if (!found) throw new Error(`deploy/k8s has no ${kind} ${name}`);
  return found.doc as unknown as T;
};
const coordinator = named<IDeployment>('Deployment', 'mnist-ddp-coordinator');
const worker = named<IDeployment>('Deployment', 'mnist-ddp-worker');
const service = named<IService>('Service', 'mnist-ddp-coordinator');
const pvc = named<IPersistentVolumeClaim>('PersistentVolumeClaim', 'mnist-ddp-coordinator-runs');
const mainContainer = (d: IDeployment): IContainer => d.spec!.template.spec!.containers[0]!;
const keysInit = (d: IDeployment): IContainer => d.spec!.template.spec!.initContainers!.find((c) => c.name === 'keys')!;

/** `$(VAR)` in args, as the kubelet expands it; a fieldRef to status.podIP stands for a pod IP. */
function expandArgs(container: IContainer): string[] {
  const env = new Map((container.env ?? []).map((e) => [e.name, e.valueFrom?.fieldRef?.fieldPath === 'status.podIP' ? '10.1.2.3' : e.value ?? '']));
  return (container.args ?? []).map((a) => a.replace(/\$\(([A-Z_][A-Z0-9_]*)\)/g, (whole, name: string) => env.get(name) ?? whole));
}

const portOf = (endpoint: string): number => Number(/:(\d+)$/.exec(endpoint)?.[1]);

let options: Record<'coordinator' | 'worker', Map<string, boolean>>;
beforeAll(async () => {
  const [c, w] = await Promise.all([cliHelp(['coordinator']), cliHelp(['worker'])]);
  options = { coordinator: optionsOfHelp(c), worker: optionsOfHelp(w) };
  preloadKinds([...docs, ...podMonitor].map(({ doc }) => doc));
});

/** A command line checked against the CLI: flags from its --help, values through its config schema. */
function checkCommand(argv: readonly string[]): { command: 'coordinator' | 'worker'; flags: CommandFlag[]; config: Readonly<Record<string, unknown>> } {
  const command = argv[0];
  if (command !== 'coordinator' && command !== 'worker') throw new Error(`expected a coordinator or worker command, got ${JSON.stringify(command)}`);
  const { flags, errors } = parseFlags(argv.slice(1), options[command]);
  expect(errors, `mnist-ddp ${argv.join(' ')}`).toEqual([]);
  return { command, flags, config: configOfFlags(command, flags) };
}

describe('Kubernetes manifests (deploy/k8s) against the Kubernetes API schemas', () => {
  const hasKubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status === 0;
  if (!hasKubectl) console.log('k8s-manifests.test: kubectl not installed; skipping the comparison with `kubectl kustomize`');

  it.skipIf(!hasKubectl)('assembles to the same documents as `kubectl kustomize deploy/k8s`', () => {
    const key = (d: Record<string, unknown>): string => `${String(d.kind)}/${String((d.metadata as { name: string }).name)}`;
    const sorted = (list: Record<string, unknown>[]): Record<string, unknown>[] => [...list].sort((a, b) => key(a).localeCompare(key(b)));
    expect(sorted(docs.map(({ doc }) => doc))).toEqual(sorted(kubectlKustomize(K8S)!));
  });

  it('holds the coordinator PVC, Deployment and Service and the worker Deployment, each valid for its kind (strict: no unknown field)', async () => {
    expect(docs.map(({ doc }) => `${String(doc.apiVersion)} ${String(doc.kind)}`).sort()).toEqual(['apps/v1 Deployment', 'apps/v1 Deployment', 'v1 PersistentVolumeClaim', 'v1 Service']);
    for (const { source, doc } of docs) expect(await validateManifest(doc), source).toEqual([]);
  });

  it('validates the optional PodMonitor against the Prometheus Operator schema', async () => {
    expect(podMonitor).toHaveLength(1);
    expect(await validateManifest(podMonitor[0]!.doc)).toEqual([]);
  });

  // The validator must bite: each broken copy fails, naming the field.
  const broken: [string, (d: { coordinator: IDeployment; worker: IDeployment; service: IService; podMonitor: Record<string, unknown> }) => Record<string, unknown>, RegExp][] = [
    ['replicas: "two"', ({ worker: w }) => ({ ...w, spec: { ...w.spec!, replicas: 'two' } }), /^\/spec\/replicas: must be integer/],
    ['an unknown field under spec', ({ worker: w }) => ({ ...w, spec: { ...w.spec!, replica: 2 } }), /^\/spec\/replica: unknown field "replica"/],
    ['a container without its required name', ({ worker: w }) => {
      const copy = structuredClone(w);
      delete (copy.spec!.template.spec!.containers[0] as Partial<IContainer>).name;
      return copy as unknown as Record<string, unknown>;
    }, /^\/spec\/template\/spec\/containers\/0: must have required property '?name'?/],
    ['a misspelt probe field deep in a container', ({ coordinator: c }) => {
      const copy = structuredClone(c) as unknown as { spec: { template: { spec: { containers: { livenessProbe: { httpGet: Record<string, unknown> } }[] } } } };
      copy.spec.template.spec.containers[0]!.livenessProbe.httpGet.paht = '/metrics';
      return copy as unknown as Record<string, unknown>;
    }, /^\/spec\/template\/spec\/containers\/0\/livenessProbe\/httpGet\/paht: unknown field/],
    ['a Service port as a string', ({ service: s }) => ({ ...s, spec: { ...s.spec!, ports: [{ ...s.spec!.ports![0]!, port: '5555' }] } }), /^\/spec\/ports\/0\/port: must be integer/],
    ['a misspelt kind', ({ worker: w }) => ({ ...w, kind: 'Deploymnet' }), /^no schema for apiVersion apps\/v1, kind Deploymnet/],
    ['a PodMonitor endpoint with an unknown field', ({ podMonitor: p }) => {
      const copy = structuredClone(p) as { spec: { podMetricsEndpoints: Record<string, unknown>[] } };
      copy.spec.podMetricsEndpoints[0]!.scrapeIntervall = '5s';
      return copy as unknown as Record<string, unknown>;
    }, /^\/spec\/podMetricsEndpoints\/0\/scrapeIntervall: unknown field/],
  ];
  it.each(broken)('rejects a broken copy: %s', async (_name, breakIt, expected) => {
    const errors = await validateManifest(breakIt({ coordinator, worker, service, podMonitor: podMonitor[0]!.doc }));
    expect(errors.some((e) => expected.test(e)), errors.join('\n')).toBe(true);
  });
});

describe('Kubernetes manifests agree with the product', () => {
  it('run real `coordinator` and `worker` commands: every flag is in the command\'s --help and every value passes its config schema', () => {
    for (const d of [coordinator, worker]) {
      expect(d.spec!.template.spec!.containers, d.metadata!.name).toHaveLength(1);
      checkCommand(expandArgs(mainContainer(d)));
    }
  });

  it('workers: Deployment mnist-ddp-worker (the `kubectl scale` knob) dial the coordinator Service and advertise their pod IP', () => {
    for (const doc of ['README.md', 'deploy/k8s/README.md']) expect(read(doc), doc).toContain('kubectl scale deployment/mnist-ddp-worker --replicas');
    const { config } = checkCommand(expandArgs(mainContainer(worker)));
    const control = service.spec!.ports!.find((p) => p.name === 'control')!;
    expect(config.coordinator).toBe(`tcp://${service.metadata!.name}:${control.port}`);
    expect(mainContainer(worker).args).toContain('--advertise-host=$(POD_IP)');
    expect(mainContainer(worker).env).toContainEqual({ name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } });
  });

  it('the Service selects the coordinator pod only, on the ports the coordinator listens on', () => {
    const { config } = checkCommand(expandArgs(mainContainer(coordinator)));
    const selector = Object.entries(service.spec!.selector!);
    const selects = (d: IDeployment): boolean => selector.every(([k, v]) => d.spec!.template.metadata!.labels![k] === v);
    expect(selects(coordinator)).toBe(true);
    expect(selects(worker)).toBe(false);
    const containerPort = (name: unknown): number | undefined => mainContainer(coordinator).ports!.find((p) => p.name === name)?.containerPort;
    const ports = new Map(service.spec!.ports!.map((p) => [p.name, p]));
    expect(ports.get('control')!.port).toBe(portOf(String(config.bind)));
    expect(containerPort(ports.get('control')!.targetPort)).toBe(portOf(String(config.bind)));
    expect(ports.get('metrics')!.port).toBe(config.coordinatorMetricsPort);
    expect(containerPort(ports.get('metrics')!.targetPort)).toBe(config.coordinatorMetricsPort);
  });

  it('scrape annotations and probes point at /metrics on the port each process serves it on, on every interface', () => {
    for (const d of [coordinator, worker]) {
      const { command, config } = checkCommand(expandArgs(mainContainer(d)));
      const port = command === 'coordinator' ? config.coordinatorMetricsPort : config.metricsPort;
      const name = d.metadata!.name!;
      expect(config.metricsHost, name).toBe('0.0.0.0');
      expect(d.spec!.template.metadata!.annotations, name).toEqual({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(port), 'prometheus.io/path': '/metrics' });
      const c = mainContainer(d);
      for (const probe of [c.readinessProbe, c.livenessProbe]) {
        expect(probe?.httpGet?.path, name).toBe('/metrics');
        expect(c.ports!.find((p) => p.name === probe!.httpGet!.port)?.containerPort, name).toBe(port);
      }
    }
    const endpoint = (podMonitor[0]!.doc.spec as { podMetricsEndpoints: { port: string; path: string }[] }).podMetricsEndpoints[0]!;
    for (const d of [coordinator, worker]) expect(mainContainer(d).ports!.map((p) => p.name)).toContain(endpoint.port);
  });

  it('the coordinator: one replica, Recreate, its --run-dir on the PersistentVolumeClaim', () => {
    expect(coordinator.spec!.replicas).toBe(1);
    expect(coordinator.spec!.strategy!.type).toBe('Recreate');
    const { config } = checkCommand(expandArgs(mainContainer(coordinator)));
    const volume = coordinator.spec!.template.spec!.volumes!.find((v) => v.persistentVolumeClaim?.claimName === pvc.metadata!.name)!;
    const mount = mainContainer(coordinator).volumeMounts!.find((m) => m.name === volume.name)!;
    expect(String(config.runDir).startsWith(`${mount.mountPath}/`)).toBe(true);
    expect(config.exitWhenDone, 'a coordinator that exits is restarted by its Deployment').toBe(false);
    expect(checkCommand(expandArgs(mainContainer(worker))).config.stayAlive).toBe(true);
  });

  it('pods run as the image\'s non-root user, without Service-link variables (mnist-ddp reads MNIST_DDP_* as flags)', () => {
    const uid = Number(/^USER (\d+)/m.exec(read('Dockerfile'))?.[1]);
    for (const d of [coordinator, worker]) {
      const pod = d.spec!.template.spec!;
      expect(pod.enableServiceLinks, d.metadata!.name).toBe(false);
      expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: uid });
    }
  });

  it('--keys names the key directory the init container fills from the Secrets that deploy/k8s/README.md creates', () => {
    const created = [...read('deploy/k8s/README.md').matchAll(/kubectl create secret generic (\S+)/g)].map((m) => m[1]!).sort();
    const used = [coordinator, worker].flatMap((d) => d.spec!.template.spec!.volumes!.flatMap((v) => (v.secret ? [v.secret.secretName!] : []))).sort();
    expect(used).toEqual(created);
    for (const d of [coordinator, worker]) {
      const { config } = checkCommand(expandArgs(mainContainer(d)));
      const mount = mainContainer(d).volumeMounts!.find((m) => m.mountPath === config.keys)!;
      expect(mount, `${d.metadata!.name} mounts ${String(config.keys)}`).toBeDefined();
      expect(mount.readOnly).toBe(true);
      expect(d.spec!.template.spec!.volumes!.find((v) => v.name === mount.name)!.emptyDir).toBeDefined();
      expect(keysInit(d).volumeMounts!.find((m) => m.name === mount.name)!.mountPath).toBe(config.keys);
    }
  });
});

describe('the init containers\' key scripts, run on a real keygen directory laid out as Secret volumes', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'mnist-ddp-k8s-keys-'));
    writeKeyDir(join(tmp, 'keys'));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  /** `kubectl create secret generic NAME --from-file=…` of deploy/k8s/README.md, against keygen's output in tmp. */
  function secretsFromReadme(): Map<string, Map<string, string>> {
    const secrets = new Map<string, Map<string, string>>();
    for (const m of read('deploy/k8s/README.md').matchAll(/kubectl create secret generic (\S+)((?: +--from-file=\S+)+)/g)) {
      const files = new Map<string, string>();
      for (const [, source] of m[2]!.matchAll(/--from-file=(\S+)/g)) {
        const path = join(tmp, source!);
        const entries = source!.endsWith('/') ? readdirSync(path).map((f) => join(path, f)) : [path];
        for (const file of entries) files.set(basename(file), readFileSync(file, 'utf8'));
      }
      secrets.set(m[1]!, files);
    }
    return secrets;
  }

  /** A Secret volume as the kubelet writes it: key → ..data/key symlinks into a timestamped dir, 0440 under fsGroup. */
  function secretVolume(dir: string, files: Map<string, string>): void {
    mkdirSync(join(dir, '..2026_01_01_00_00_00.000000001'), { recursive: true });
    for (const [key, text] of files) {
      writeFileSync(join(dir, '..2026_01_01_00_00_00.000000001', key), text);
      chmodSync(join(dir, '..2026_01_01_00_00_00.000000001', key), 0o440);
      symlinkSync(join('..data', key), join(dir, key));
    }
    symlinkSync('..2026_01_01_00_00_00.000000001', join(dir, '..data'));
  }

  /** Runs a Deployment's `keys` init container script with its mounts under `root`; returns its key directory. */
  function runKeysInit(d: IDeployment, root: string, secrets: Map<string, Map<string, string>>): string {
    const init = keysInit(d);
    expect(init.command).toEqual(['/bin/sh', '-c']);
    let script = init.args![0]!;
    const volumes = d.spec!.template.spec!.volumes!;
    for (const mount of init.volumeMounts!) {
      const volume = volumes.find((v) => v.name === mount.name)!;
      const at = join(root, mount.mountPath);
      if (volume.secret) secretVolume(at, secrets.get(volume.secret.secretName!)!);
      else mkdirSync(at, { recursive: true });
      script = script.replaceAll(mount.mountPath, at);
    }
    const run = spawnSync('/bin/sh', ['-c', script], { encoding: 'utf8' });
    expect(run.status, `${d.metadata!.name} keys init: ${run.stderr}`).toBe(0);
    return join(root, checkCommand(expandArgs(mainContainer(d))).config.keys as string);
  }

  it('give the coordinator its keypair and allowed/ and each worker its keypair and coordinator.pub, loadable as mnist-ddp requires', () => {
    const secrets = secretsFromReadme();
    const keygen = { coordinator: loadCoordinatorKeys(join(tmp, 'keys')), worker: loadWorkerKeys(join(tmp, 'keys')) };
    const coordinatorKeys = loadCoordinatorKeys(runKeysInit(coordinator, join(tmp, 'coordinator-pod'), secrets));
    expect(coordinatorKeys.server).toEqual(keygen.coordinator.server);
    expect([...coordinatorKeys.allowed.keys()]).toEqual(['worker.pub']);
    const workerDir = runKeysInit(worker, join(tmp, 'worker-pod'), secrets);
    expect(loadWorkerKeys(workerDir)).toEqual(keygen.worker);
    expect(readdirSync(workerDir).sort(), 'a worker pod never holds the coordinator\'s secret key').toEqual(['coordinator.pub', 'worker.key', 'worker.pub']);
  });
});

describe('Dockerfile', () => {
  const dockerfile = read('Dockerfile');

  it('lints clean with dockerfile-utils (the Docker language server\'s validator)', () => {
    expect(lintDockerfile(dockerfile).map((d) => `line ${d.range.start.line + 1}: ${d.message}`)).toEqual([]);
    // ...and it bites.
    expect(lintDockerfile(dockerfile.replace(/^WORKDIR/m, 'WORKDIRR')).map((d) => d.message)).toEqual(['Unknown instruction: WORKDIRR']);
    expect(lintDockerfile(dockerfile.replace(/^(COPY .*) \S+$/m, '$1')).map((d) => d.message)).toEqual(['COPY requires at least two arguments']);
  });

  it('copies the directory `npm run bundle` writes for this version and runs its launcher as a non-root user', () => {
    const version = (JSON.parse(read('package.json')) as { version: string }).version;
    expect(/^ARG VERSION=(\S+)$/m.exec(dockerfile)?.[1], 'the Dockerfile\'s default VERSION is package.json\'s').toBe(version);
    // scripts/bundle.ts: the directory bundle/mnist-ddp-<version>-linux-x64/ with the launcher `mnist-ddp` at its top.
    const bundleScript = read('scripts/bundle.ts');
    expect(bundleScript).toContain('`mnist-ddp-${version}-linux-x64`');
    expect(bundleScript).toMatch(/writeFileSync\(join\(dir, 'mnist-ddp'\), LAUNCHER\)/);
    const copy = /^COPY (?:--\S+ )*bundle\/mnist-ddp-\$\{VERSION\}-linux-x64\/ (\S+)$/m.exec(dockerfile);
    expect(copy, 'COPY bundle/mnist-ddp-${VERSION}-linux-x64/ DEST').not.toBeNull();
    const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(dockerfile)![1]!) as string[];
    expect(entrypoint.at(-1)).toBe(`${copy![1]!.replace(/\/$/, '')}/mnist-ddp`);
    expect(Number(/^USER (\d+)/m.exec(dockerfile)?.[1])).toBeGreaterThan(0);
    expect(read('.dockerignore').split('\n')).toContain('!bundle/mnist-ddp-*-linux-x64');
  });

  it('is the image the manifests run: mnist-ddp:<package.json version> after the kustomization\'s images: rule', () => {
    const version = (JSON.parse(read('package.json')) as { version: string }).version;
    for (const d of [coordinator, worker]) {
      for (const c of [...d.spec!.template.spec!.initContainers!, ...d.spec!.template.spec!.containers]) expect(c.image, `${d.metadata!.name} ${c.name}`).toBe(`mnist-ddp:${version}`);
    }
  });

  it('exposes the ports the manifests use', () => {
    const exposed = /^EXPOSE (.+)$/m.exec(dockerfile)![1]!.split(/\s+/).map(Number);
    for (const d of [coordinator, worker]) for (const p of mainContainer(d).ports!) expect(exposed, `${d.metadata!.name} ${p.name}`).toContain(p.containerPort);
  });
});

describe('Slurm (deploy/slurm/mnist-ddp.sbatch)', () => {
  const script = join(REPO, 'deploy/slurm/mnist-ddp.sbatch');

  it('is valid bash, and its coordinator and worker commands use real flags with values the CLI accepts', () => {
    expect(spawnSync('bash', ['-n', script], { encoding: 'utf8' }).stderr).toBe('');
    const env = { PATH: process.env.PATH, HOME: '/home/u', DRY_RUN: '1', SLURM_JOB_ID: '77', SLURM_NTASKS: '4', COORDINATOR_HOST: 'node001' };
    const run = spawnSync('bash', [script], { encoding: 'utf8', env, cwd: tmpdir() });
    expect(run.status, run.stderr).toBe(0);
    const line = (label: string): string[] => new RegExp(`^${label}: (.*)$`, 'm').exec(run.stdout)![1]!.split(' ');
    const [launcher, ...coordinatorArgv] = line('coordinator');
    const version = (JSON.parse(read('package.json')) as { version: string }).version;
    expect(launcher, 'the default BUNDLE is this version\'s bundle directory').toBe(`/home/u/mnist-ddp-${version}-linux-x64/mnist-ddp`);
    const c = checkCommand(coordinatorArgv).config;
    const w = checkCommand(line('worker').slice(1)).config;
    expect(w.coordinator).toBe(`tcp://node001:${portOf(String(c.bind))}`);
    expect(c.minWorkers).toBe(4);
    expect(c.keys).toBe(w.keys);
    expect(String(c.runDir)).toMatch(/slurm-77$/);
    expect(line('srun').join(' ')).toContain('NODE_APP_INSTANCE=');
  });

  const hasShellcheck = spawnSync('shellcheck', ['--version']).status === 0;
  if (!hasShellcheck) console.log('k8s-manifests.test: shellcheck not installed (Debian package shellcheck); skipping its check of the sbatch script');
  it.skipIf(!hasShellcheck)('passes shellcheck', () => {
    const run = spawnSync('shellcheck', [script], { encoding: 'utf8' });
    expect(run.status, run.stdout).toBe(0);
  });
});
