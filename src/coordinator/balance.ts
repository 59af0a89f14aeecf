import type { Logger } from '../shared/core/log.js';
import { median } from '../shared/core/stats.js';
import { apportion, maxShare, rankSlice, stepShares, type BalanceMode } from '../shared/data/shard-plan.js';
import type { StepReport } from '../shared/wire/control-payloads.js';
import type { WorkerRecord } from './membership.js';

export interface BalanceSettings {
  mode: BalanceMode;
  /** --batch-size: a full step is ring size × batchSize samples, whatever the split. */
  batchSize: number;
  /** Within a generation, reconsider the shares every this many steps (0: only when the ring re-forms). */
  rebalanceEvery?: number;
  log: Logger;
}

/** Within a generation, the shares are reconsidered this often (steps): a few measurement windows apart. */
export const REBALANCE_EVERY_STEPS = 20;
/** Each worker's speed is the median ms per sample of its last this many measured steps (robust to a GC pause). */
const WINDOW = 5;
/** Measured steps every ring member needs before the first throughput split. */
const MIN_MEASURED = 3;
/** New shares replace the current ones only if they shorten the step's predicted compute phase by this fraction. */
const MIN_GAIN = 0.05;

interface Speed {
  /** ms of computeGradients per sample, most recent last. */
  msPerSample: number[];
  /** Local batch sizes this worker has computed once: the first step at a new size is warm-up, not measured. */
  sizes: Set<number>;
}

/**
 * Splits each step's global batch among the ring's ranks (issue #13, mixed rings). The global batch stays
 * ring size × --batch-size, so the optimisation is the same whatever the split: the reduced gradient is the sum over
 * every sample divided by the total count (Replica.applyReduced), and the shard plan hands out each sample once.
 *
 * Under `throughput` (or `auto` on a ring that mixes devices) each rank's share is proportional to its measured
 * samples/s in computeGradients, so every rank finishes its compute at about the same time instead of the fast ones
 * waiting for the slowest at the all-reduce. A generation starts from what is known about its members (a new ring
 * with nobody measured yet starts equal); the first steps at each new batch size are warm-up (wasm compiles lazily,
 * webgpu compiles shaders per shape) and are not measured; once every member has MIN_MEASURED steps, and then every
 * `rebalanceEvery` steps, the split is recomputed, and adopted only when it shortens the predicted compute phase by
 * MIN_GAIN, so shares do not wobble with measurement noise. Shares are integers ≥ 1 and ≤ maxShare(batchSize),
 * rounded by largest remainder (shard-plan.ts apportion).
 *
 * Timing-derived shares make a run's sample-to-rank assignment (and so its float summation order and augmentation
 * streams) depend on the machines' speed: `auto` keeps equal shares on a ring of one device kind, where they cost
 * nothing and runs stay bit-reproducible (--resume ends with the same weights as an uninterrupted run).
 */
export class BatchBalancer {
  /** By worker id: ranks change between generations, a worker's speed does not. */
  private readonly speeds = new Map<number, Speed>();
  private generation = -1;
  private ring: readonly WorkerRecord[] = [];
  /** This generation's full-step shares by rank; undefined: the equal split (rankSlice). */
  private shares: number[] | undefined;
  private balanced = false;
  /** Every member had been measured when the shares were last considered: from then on, every rebalanceEvery steps. */
  private calibrated = false;
  private consideredAt = 0;

  constructor(private readonly settings: BalanceSettings) {}

  /**
   * The per-rank counts for a step of `count` samples of `generation`, whose ranks are `ring` (in rank order), or
   * undefined for the equal split. A new generation is planned (and logged) on its first step.
   */
  sharesFor(ring: readonly WorkerRecord[], generation: number, step: number, count: number): number[] | undefined {
    if (generation !== this.generation) this.beginGeneration(ring, generation, step);
    else if (this.balanced && this.due(step)) this.reconsider(step);
    return this.shares ? stepShares(count, this.shares) : undefined;
  }

  /** One step's reports, by rank of `ring`: each rank's compute time per sample. */
  record(ring: readonly WorkerRecord[], reports: readonly StepReport[]): void {
    ring.forEach((w, rank) => {
      const r = reports[rank];
      if (!r || r.localCount === 0 || !(r.computeMs > 0)) return;
      let speed = this.speeds.get(w.id);
      if (!speed) this.speeds.set(w.id, (speed = { msPerSample: [], sizes: new Set() }));
      if (!speed.sizes.has(r.localCount)) {
        speed.sizes.add(r.localCount);
        return;
      }
      speed.msPerSample.push(r.computeMs / r.localCount);
      if (speed.msPerSample.length > WINDOW) speed.msPerSample.shift();
    });
  }

  /** Whether this generation splits by throughput: always, never, or (auto) when its members name different devices. */
  private balances(ring: readonly WorkerRecord[]): boolean {
    if (this.settings.mode !== 'auto') return this.settings.mode === 'throughput';
    return new Set(ring.map((w) => w.device).filter((d) => d !== undefined)).size > 1;
  }

  private beginGeneration(ring: readonly WorkerRecord[], generation: number, step: number): void {
    this.generation = generation;
    this.ring = [...ring];
    for (const id of this.speeds.keys()) if (!ring.some((w) => w.id === id)) this.speeds.delete(id);
    this.balanced = ring.length > 1 && this.balances(ring);
    this.shares = undefined;
    this.calibrated = false;
    if (this.balanced) this.consider(step);
    const why = this.settings.mode === 'auto'
      ? `--balance auto: ${this.balanced ? 'the ring mixes devices' : 'one kind of device'}`
      : `--balance ${this.settings.mode}`;
    const mode = !this.balanced ? 'equal' : this.shares ? 'by measured throughput' : 'equal until every worker is measured';
    this.logShares(`generation ${generation}: batch shares ${mode} (${why})`, { generation, balance: this.settings.mode });
  }

  private allMeasured(): boolean {
    return this.ring.every((w) => (this.speeds.get(w.id)?.msPerSample.length ?? 0) >= MIN_MEASURED);
  }

  private due(step: number): boolean {
    if (!this.calibrated) return this.allMeasured();
    const every = this.settings.rebalanceEvery ?? REBALANCE_EVERY_STEPS;
    return every > 0 && step - this.consideredAt >= every;
  }

  /** Adopts the throughput split if it beats the current one by MIN_GAIN; true when the shares changed. */
  private consider(step: number): boolean {
    this.consideredAt = step;
    this.calibrated = this.allMeasured();
    const proposed = this.propose();
    if (!proposed) return false;
    const before = this.predictedMs(this.shares ?? this.equalShares());
    const after = this.predictedMs(proposed);
    if (!(after <= before * (1 - MIN_GAIN))) return false;
    this.shares = proposed;
    return true;
  }

  private reconsider(step: number): void {
    const before = this.predictedMs(this.shares ?? this.equalShares());
    if (!this.consider(step)) return;
    const after = this.predictedMs(this.shares!);
    this.logShares(`generation ${this.generation}, step ${step}: batch shares rebalanced by measured throughput (predicted compute ${before.toFixed(1)} → ${after.toFixed(1)} ms a step)`,
      { generation: this.generation, step, balance: this.settings.mode });
  }

  /** Median ms per sample of each rank, undefined where not measured yet. */
  private msPerSample(): Array<number | undefined> {
    return this.ring.map((w) => {
      const window = this.speeds.get(w.id)?.msPerSample;
      return window && window.length > 0 ? median(window) : undefined;
    });
  }

  /** Each rank's ms per sample, an unmeasured one counted as the median measured one; undefined if none is measured. */
  private estimatedMs(): number[] | undefined {
    const ms = this.msPerSample();
    const known = ms.filter((m): m is number => m !== undefined);
    if (known.length === 0) return undefined;
    const typical = median(known);
    return ms.map((m) => m ?? typical);
  }

  /** Full-step shares proportional to measured speed. */
  private propose(): number[] | undefined {
    const ms = this.estimatedMs();
    if (!ms) return undefined;
    return apportion(this.ring.length * this.settings.batchSize, ms.map((m) => 1 / m), { min: 1, max: maxShare(this.settings.batchSize) });
  }

  /** The slowest rank's compute time under `shares`: what a step waits for before its all-reduce can finish (0 unmeasured). */
  private predictedMs(shares: readonly number[]): number {
    const ms = this.estimatedMs();
    return ms ? Math.max(...shares.map((s, rank) => s * ms[rank]!)) : 0;
  }

  private equalShares(): number[] {
    const total = this.ring.length * this.settings.batchSize;
    return this.ring.map((_, rank) => {
      const [start, end] = rankSlice(0, total, rank, this.ring.length);
      return end - start;
    });
  }

  private logShares(message: string, fields: Record<string, unknown>): void {
    const shares = this.shares ?? this.equalShares();
    const ms = this.msPerSample();
    const ranks = this.ring.map((w, rank) => ({
      rank, worker: w.id, device: w.device ?? 'unknown', share: shares[rank]!,
      ...(ms[rank] !== undefined ? { samplesPerSec: Math.round(1000 / ms[rank]!) } : {}),
    }));
    const list = ranks.map((r) => `rank ${r.rank} (${r.device}${r.samplesPerSec !== undefined ? `, ${r.samplesPerSec} samples/s` : ''}) ${r.share}`).join(', ');
    this.settings.log.info({ ...fields, shares: ranks }, `${message}: ${list}`);
  }
}
