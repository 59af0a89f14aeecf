import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

// Issue #12: the import rule of src/ (.dependency-cruiser.cjs) is part of `npm test`. The second test proves each
// rule still bites, so a rule that silently stopped matching (a renamed folder, imports no longer resolved) fails
// here instead of passing vacuously.

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const CONFIG = join(REPO, '.dependency-cruiser.cjs');
const DEPCRUISE = join(REPO, 'node_modules', 'dependency-cruiser', 'bin', 'dependency-cruise.mjs');

interface Violation {
  rule: { name: string };
  from: string;
  to: string;
  cycle?: Array<{ name: string }>;
}
interface CruiseSummary {
  violations: Violation[];
  totalCruised: number;
}

/** Runs depcruise on `src` of `cwd` with the repository's rules; returns the summary and its readable report. */
function cruise(cwd: string): { summary: CruiseSummary; report: string } {
  const run = (outputType: string) => spawnSync(process.execPath, [DEPCRUISE, 'src', '--config', CONFIG, '--output-type', outputType], { cwd, encoding: 'utf8', timeout: 60_000 });
  const json = run('json');
  if (json.error || !json.stdout.startsWith('{')) throw new Error(`depcruise did not run: ${json.error?.message ?? ''}\n${json.stdout}\n${json.stderr}`);
  const { summary } = JSON.parse(json.stdout) as { summary: CruiseSummary };
  const report = summary.violations.length > 0 ? run('err-long').stdout : '';
  return { summary, report };
}

const fixtures: string[] = [];
afterAll(() => {
  for (const dir of fixtures) rmSync(dir, { recursive: true, force: true });
});

/** A throwaway tree `src/…` with the given files and the repository's module settings. */
function fixtureTree(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'mnist-ddp-depcruise-'));
  fixtures.push(dir);
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', strict: true }, include: ['src'] }));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  return dir;
}

describe('import rule (.dependency-cruiser.cjs)', () => {
  it('src/ follows it: commands → coordinator | worker → shared, serve/ and report/ → shared, no cycles', () => {
    const { summary, report } = cruise(REPO);
    expect(summary.totalCruised, 'modules cruised (did src/ resolve?)').toBeGreaterThan(50);
    expect(summary.violations, `depcruise found violations:\n${report}`).toEqual([]);
  });

  it('catches each kind of violation', () => {
    const dir = fixtureTree({
      'src/cli.ts': "import './commands/train.js';\nimport './worker/main.js';\n",
      'src/commands/train.ts': "import '../coordinator/run.js';\nimport '../cli.js';\n",
      'src/coordinator/run.ts': "import '../report/write.js';\nimport './driver.js';\n",
      'src/coordinator/driver.ts': "import '../worker/main.js';\nimport '../report/write.js';\n",
      'src/worker/main.ts': "import '../coordinator/driver.js';\nimport '../shared/a.js';\n",
      'src/report/write.ts': "import '../coordinator/run.js';\nimport '../shared/a.js';\n",
      'src/serve/http.ts': "import '../report/write.js';\n",
      'src/shared/a.ts': "import './b.js';\nimport '../worker/main.js';\nimport './missing.js';\n",
      'src/shared/b.ts': "import './a.js';\n",
    });
    const { summary, report } = cruise(dir);
    const edges = summary.violations.map((v) => `${v.rule.name}: ${v.from} → ${v.to}`);
    expect(edges, report).toEqual(expect.arrayContaining([
      'shared-imports-only-shared: src/shared/a.ts → src/worker/main.ts',
      'worker-imports-worker-or-shared: src/worker/main.ts → src/coordinator/driver.ts',
      'coordinator-imports-coordinator-or-shared: src/coordinator/driver.ts → src/worker/main.ts',
      'coordinator-imports-coordinator-or-shared: src/coordinator/driver.ts → src/report/write.ts',
      'report-imports-only-shared: src/report/write.ts → src/coordinator/run.ts',
      'serve-imports-only-shared: src/serve/http.ts → src/report/write.ts',
      'only-the-entry-point-imports-cli: src/commands/train.ts → src/cli.ts',
      'imports-resolve: src/shared/a.ts → ./missing.js',
    ]));
    expect(edges.filter((e) => e.startsWith('no-cycles:')).length).toBeGreaterThan(0);
    // The allowed edges stay allowed: cli → anything, commands → coordinator, run.ts → report/, worker → shared.
    for (const from of ['src/cli.ts', 'src/coordinator/run.ts']) {
      expect(summary.violations.filter((v) => v.from === from && v.rule.name !== 'no-cycles'), from).toEqual([]);
    }
    expect(edges).not.toContain('worker-imports-worker-or-shared: src/worker/main.ts → src/shared/a.ts');
    expect(edges).not.toContain('coordinator-run-may-write-the-report: src/coordinator/run.ts → src/report/write.ts');
  });
});
