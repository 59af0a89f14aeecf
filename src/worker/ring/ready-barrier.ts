import { MnistDdpError } from '../../shared/core/errors.js';

/**
 * A collective's start-up barrier: the ring is ready once a hello from every other rank went round to it; recursive
 * doubling, once each rank it receives from (`expected`) said hello directly. Fails with PEER_TIMEOUT naming the
 * rank most likely down when the deadline passes first.
 */
export class RingReadyBarrier {
  private readonly heardFrom = new Set<number>();
  private waiter: { resolve: () => void; reject: (err: Error) => void } | undefined;
  private readonly expected: ReadonlySet<number>;

  constructor(
    private readonly rank: number,
    private readonly worldSize: number,
    private readonly generation: number,
    private readonly peers: readonly string[],
    /** The ranks to hear from directly (recursive doubling); absent: every other rank, through the ring. */
    private readonly direct?: readonly number[],
  ) {
    this.expected = new Set(direct ?? [...Array(worldSize).keys()].filter((r) => r !== rank));
  }

  /** Resolves once every other rank was heard from, or rejects after `timeoutMs` or on `fail`. */
  wait(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const missing = [...this.expected].filter((r) => !this.heardFrom.has(r)).sort((a, b) => a - b);
        // A hello from rank o reaches a ring rank through every rank between them, so the nearest silent rank on the
        // left is the one that is down (or unreachable); the others are merely behind it. Direct hellos blame no one else.
        const nearest = this.direct ? missing[0]! : this.nearestMissingOnLeft(missing);
        const which = this.direct ? 'is silent' : 'is the nearest silent rank on the left';
        reject(
          new MnistDdpError(
            'PEER_TIMEOUT',
            `rank ${this.rank} waited ${timeoutMs} ms for the ${this.direct ? 'collective' : 'ring'} of ${this.worldSize} (generation ${this.generation}) to form and never heard from rank(s) ${missing.join(', ')}; ` +
              `rank ${nearest} (${this.peers[nearest] ?? '?'}) ${which}: check that it runs and that its inbox is reachable`,
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
    const complete = this.heardFrom.size === this.expected.size;
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
