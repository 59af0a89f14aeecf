import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * End-to-end tests run the shipped entry point (bin/mnist-ddp.js → dist/), so build it once before any test.
 * Type errors do not stop unit tests here (tsc still emits); `npm run typecheck` in .ci/run is the type gate.
 */
export default function setup(): void {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  const result = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: root, encoding: 'utf8' });
  if (result.status !== 0) process.stderr.write(`[global-setup] tsc reported errors:\n${result.stdout}${result.stderr}\n`);
}
