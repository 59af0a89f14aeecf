import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const WEBGPU_RUNNER = join(ROOT, 'test/integration/webgpu-runner.ts');

export interface WebgpuProbe {
  ok: boolean;
  code?: string;
  message?: string;
  adapter?: { vendor: string; architecture: string; description: string; software: boolean };
}

/**
 * Whether this machine has a WebGPU adapter, asked once at collection time in a child process (webgpu-runner.ts).
 * Without one, the caller's tests are skipped and `label` prints why; never passed silently. CI installs a
 * software GPU (scripts/install-mesa-backports.sh) and sets MNIST_DDP_TEST_REQUIRE_WEBGPU=1, so there a missing
 * adapter fails the file instead.
 */
export function probeWebgpu(label: string): WebgpuProbe {
  const r = spawnSync(process.execPath, ['--import', 'tsx', WEBGPU_RUNNER], { cwd: ROOT, input: '{"task":"probe"}', encoding: 'utf8', timeout: 60_000 });
  let probe: WebgpuProbe;
  try {
    probe = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as WebgpuProbe;
  } catch {
    probe = { ok: false, code: 'PROBE_FAILED', message: `probe exited ${r.status}: ${r.stderr.slice(-500)}` };
  }
  if (!probe.ok && process.env.MNIST_DDP_TEST_REQUIRE_WEBGPU === '1') {
    throw new Error(`[${label}] MNIST_DDP_TEST_REQUIRE_WEBGPU=1 but no WebGPU adapter: ${probe.code}: ${probe.message}`);
  }
  if (!probe.ok) console.warn(`[${label}] tests that need a WebGPU adapter are skipped: ${probe.code}: ${probe.message}`);
  return probe;
}
