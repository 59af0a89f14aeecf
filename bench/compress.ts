/**
 * Issue #16 item 5's figure: gradient compression on a slow link. A coordinator and 2 workers, each in its own network
 * namespace (test/helpers/netns.ts), every host's egress limited by a token bucket (`tc tbf`, default 100 Mbit/s),
 * train the same short run with --compress none, fp16 and bf16; the order of the modes rotates from round to round,
 * so drift on the machine does not favour one mode. Prints each run's samples/s (training only, as the run reports it),
 * its median step samples/s after the first steps, its test accuracy, and the medians per mode.
 *
 *   npx tsx bench/compress.ts [--model cnn-large] [--batch-size 16] [--train-subset 3200] [--epochs 1]
 *     [--rounds 3] [--rate 100mbit|none] [--modes none,fp16,bf16] [--seed 5] [--warmup-steps 0] [--compare-loopback] [--json]
 *
 * --rate none leaves the links unshaped. --compare-loopback adds, to every round, the same run with --compress none
 * and every process in this host's own namespace on 127.0.0.1 (issue #16: namespaces against loopback at full speed).
 *
 * Needs root (network namespaces), iproute2 and a build (`npx tsc -p tsconfig.build.json`). Runs over CURVE, as a run
 * between hosts would.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exitWithin, lastJson, startCli, type BackgroundProcess } from '../test/helpers/cli.js';
import { readRecords, readSteps } from '../test/helpers/history.js';
import { NamespaceLab, namespacesUnavailable } from '../test/helpers/netns.js';
import { flag, freePort, median } from './common.js';

const MODEL = flag('model', 'cnn-large');
const BATCH = flag('batch-size', '16');
const SUBSET = flag('train-subset', '3200');
const EPOCHS = flag('epochs', '1');
const ROUNDS = Number(flag('rounds', '3'));
const RATE = flag('rate', '100mbit');
const MODES = flag('modes', 'none,fp16,bf16').split(',');
const SEED = flag('seed', '5');
/** No lr warm-up by default: a short run would otherwise spend most of its steps ramping up. */
const WARMUP = flag('warmup-steps', '0');
const JSON_OUT = process.argv.includes('--json');
const COMPARE_LOOPBACK = process.argv.includes('--compare-loopback');
/** The variant that runs every process on loopback instead of in namespaces (--compare-loopback). */
const LOOPBACK = 'loopback';
const label = (mode: string): string => (mode === LOOPBACK ? 'loopback, --compress none' : `--compress ${mode}`);
/** Steps left out of the step median: the first steps of a run compile kernels and fill caches. */
const WARMUP_STEPS = 5;
const RUN_DEADLINE_MS = 30 * 60_000;
const BIN = fileURLToPath(new URL('../bin/mnist-ddp.js', import.meta.url));
const HOSTS = ['coordinator', 'w0', 'w1'] as const;
const CONTROL_PORT = 5555;

interface Summary { samplesPerSec: number; testAccuracy: number; wallSeconds: number }
interface RunResult {
  round: number; mode: string; samplesPerSec: number; stepMedianSamplesPerSec: number; testAccuracy: number; wallSeconds: number; steps: number;
  /** Ring re-formations during the run (a worker declared lost): its samples/s then includes redone steps. */
  recoveries: number;
}

/** `mode` is a --compress mode in namespaces, or LOOPBACK: --compress none with every process on 127.0.0.1. */
async function runOnce(dir: string, keys: string, round: number, mode: string): Promise<RunResult> {
  const onLoopback = mode === LOOPBACK;
  const lab = onLoopback ? undefined : new NamespaceLab(HOSTS);
  const processes: BackgroundProcess[] = [];
  try {
    if (lab && RATE !== 'none') for (const h of HOSTS) lab.shape(h, RATE);
    const runDir = join(dir, `r${round}-${mode}`);
    const port = onLoopback ? await freePort() : CONTROL_PORT;
    const start = (host: string, args: string[]): BackgroundProcess => (lab ? lab.startCli(host, host, args) : startCli(host, args));
    const coordinator = start('coordinator', [
      'coordinator', '--keys', keys, '--bind', `tcp://${onLoopback ? '127.0.0.1' : '0.0.0.0'}:${port}`, '--min-workers', '2', '--model', MODEL, '--batch-size', BATCH,
      '--train-subset', SUBSET, '--epochs', EPOCHS, '--seed', SEED, '--warmup-steps', WARMUP, '--validation-size', '500', '--backend', 'wasm',
      '--compress', onLoopback ? 'none' : mode,
      // A shared 2-core machine can starve a worker evaluating cnn-large for seconds: a lost worker would redo steps.
      '--heartbeat-timeout-ms', '30000',
      '--no-report', '--json', '--run-dir', runDir,
    ]);
    processes.push(coordinator);
    const address = lab ? lab.host('coordinator').address : '127.0.0.1';
    for (const w of ['w0', 'w1']) {
      processes.push(start(w, ['worker', '--keys', keys, '--coordinator', `tcp://${address}:${port}`, '--backend', 'wasm', '--no-metrics']));
    }
    const code = await exitWithin(coordinator, RUN_DEADLINE_MS);
    if (code !== 0) throw new Error(`coordinator (--compress ${mode}) exited with ${code}:\n${coordinator.output().slice(-3000)}`);
    const summary = lastJson<Summary>(coordinator.stdout());
    const steps = readSteps(runDir);
    const recoveries = readRecords(runDir).filter((r) => r.type === 'recovery').length;
    if (recoveries > 0) process.stderr.write(`[compress] round ${round} --compress ${mode}: ${recoveries} recovery(ies); coordinator's warnings:\n${coordinator.output().split('\n').filter((l) => /"level":(40|50)/.test(l)).slice(-8).join('\n')}\n`);
    const stepRates = steps.slice(WARMUP_STEPS).map((s) => s.samplesPerSec);
    return {
      round, mode, samplesPerSec: summary.samplesPerSec, stepMedianSamplesPerSec: Math.round(median(stepRates) * 10) / 10,
      testAccuracy: summary.testAccuracy, wallSeconds: summary.wallSeconds, steps: steps.length, recoveries,
    };
  } finally {
    await Promise.all(processes.map((p) => p.stop(0)));
    lab?.destroy();
  }
}

async function main(): Promise<void> {
  const unavailable = namespacesUnavailable();
  if (unavailable) throw new Error(`bench/compress.ts needs network namespaces: ${unavailable}`);
  const dir = mkdtempSync(join(tmpdir(), 'mnist-ddp-compress-'));
  try {
    const keys = join(dir, 'keys');
    execFileSync(process.execPath, [BIN, 'keygen', '--out', keys]);
    const log = (s: string): void => void (JSON_OUT ? process.stderr : process.stdout).write(`${s}\n`);
    log(`# ${MODEL}, 2 workers, --batch-size ${BATCH}, --train-subset ${SUBSET}, ${EPOCHS} epoch(s), every link ${RATE === 'none' ? 'unshaped' : `${RATE} (tc tbf)`}, ${ROUNDS} rounds`);
    const results: RunResult[] = [];
    const variants = COMPARE_LOOPBACK ? [...MODES, LOOPBACK] : MODES;
    for (let round = 1; round <= ROUNDS; round++) {
      const order = variants.map((_, i) => variants[(i + round - 1) % variants.length]!);
      for (const mode of order) {
        const r = await runOnce(dir, keys, round, mode);
        results.push(r);
        log(`round ${round} ${label(mode)}: ${r.samplesPerSec} samples/s (median step ${r.stepMedianSamplesPerSec}), test accuracy ${(100 * r.testAccuracy).toFixed(2)} %, ${r.steps} steps, ${r.wallSeconds} s${r.recoveries ? `, ${r.recoveries} ring re-formation(s)` : ''}`);
      }
    }
    const byMode = variants.map((mode) => {
      const runs = results.filter((r) => r.mode === mode);
      return {
        mode,
        samplesPerSec: median(runs.map((r) => r.samplesPerSec)),
        stepMedianSamplesPerSec: median(runs.map((r) => r.stepMedianSamplesPerSec)),
        testAccuracy: median(runs.map((r) => r.testAccuracy)),
      };
    });
    const base = byMode.find((m) => m.mode === 'none');
    for (const m of byMode) {
      const speedup = base ? ` (${(m.samplesPerSec / base.samplesPerSec).toFixed(2)}x none; steps ${(m.stepMedianSamplesPerSec / base.stepMedianSamplesPerSec).toFixed(2)}x)` : '';
      const accuracy = base ? `, ${(100 * (m.testAccuracy - base.testAccuracy)).toFixed(2)} points vs none` : '';
      log(`median ${label(m.mode)}: ${m.samplesPerSec} samples/s${speedup}, step median ${m.stepMedianSamplesPerSec}, test accuracy ${(100 * m.testAccuracy).toFixed(2)} %${accuracy}`);
    }
    if (JSON_OUT) process.stdout.write(`${JSON.stringify({ model: MODEL, batchSize: Number(BATCH), trainSubset: Number(SUBSET), rate: RATE, rounds: results, medians: byMode })}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
