import { MnistDdpError } from '../../shared/core/errors.js';

/**
 * The ring's start-up barrier: a rank is ready once a hello from every other rank went round to it. Fails with
 * PEER_TIMEOUT naming the rank most likely down when the deadline passes first.
 */
export class RingReadyBarrier {
  private readonly heardFrom = new Set<number>();
  private waiter: { resolve: () => void; reject: (err: Error) => void } | undefined;

  constructor(
    private readonly rank: number,
    private readonly worldSize: number,
    private readonly generation: number,
    private readonly peers: readonly string[],
  ) {}

  /** Resolves once every other rank was heard from, or rejects after `timeoutMs` or on `fail`. */
  wait(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const missing = [...Array(this.worldSize).keys()].filter((r) => r !== this.rank && !this.heardFrom.has(r));
        // A hello from rank o reaches this rank through every rank between them, so the nearest silent rank on the
        // left is the one that is down (or unreachable); the others are merely behind it.
        const nearest = this.nearestMissingOnLeft(missing);
        reject(
          new MnistDdpError(
            'PEER_TIMEOUT',
            `rank ${this.rank} waited ${timeoutMs} ms for the ring of ${this.worldSize} (generation ${this.generation}) to form and never heard from rank(s) ${missing.join(', ')}; ` +
              `rank ${nearest} (${this.peers[nearest] ?? '?'}) is the nearest silent rank on the left: check that it runs and that its inbox is reachable`,
            { missingRank: nearest, missingRanks: missing, rank: this.rank, timeoutMs },
          ),
        );
      }, timeoutMs);
      this.waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
    });
  }

  /** Records a hello from `origin`: `duplicate` when it was heard before, `complete` when it was the last one due. */
  hear(origin: number): { duplicate: boolean; complete: boolean } {
    if (this.heardFrom.has(origin)) return { duplicate: true, complete: false };
    this.heardFrom.add(origin);
    const complete = this.heardFrom.size === this.worldSize - 1;
    if (complete) this.waiter?.resolve();
    return { duplicate: false, complete };
  }

  fail(err: Error): void {
    this.waiter?.reject(err);
  }

  private nearestMissingOnLeft(missing: readonly number[]): number {
    for (let d = 1; d < this.worldSize; d++) {
      const r = (this.rank - d + this.worldSize) % this.worldSize;
      if (missing.includes(r)) return r;
    }
    return (this.rank - 1 + this.worldSize) % this.worldSize;
  }
}
