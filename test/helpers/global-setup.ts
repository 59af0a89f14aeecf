import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * End-to-end tests run the shipped entry point (bin/mnist-ddp.js → dist/), so build it once before any test. A type
 * error fails the run here: tests never run against a dist/ that tsc emitted from code that does not type-check.
 */
export default function setup(): void {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  const result = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: root, encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`[global-setup] tsc -p tsconfig.build.json failed; fix these before testing:\n${result.stdout}${result.stderr}`);
}
