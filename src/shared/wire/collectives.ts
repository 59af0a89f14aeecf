import { MnistDdpError } from '../core/errors.js';

/**
 * Which all-reduce a generation uses (issue #16 item 4), chosen by the coordinator from the gradient's size, as NCCL
 * and gloo choose by message size:
 * - `ring` (worker/ring/ring-allreduce.ts): bandwidth-optimal, each rank moves 2(N−1)/N buffers, in 2(N−1) hops;
 * - `doubling` (worker/ring/doubling-allreduce.ts): latency-optimal, log2(N) hops (2 more when N is not a power of
 *   two), each rank moves log2(N) whole buffers.
 * `auto` takes doubling for buffers up to the threshold and the ring above it. The ring alone compresses (--compress),
 * so a compressed run keeps the ring.
 */
export const COLLECTIVE_MODES = ['auto', 'ring', 'doubling'] as const;
export type CollectiveMode = (typeof COLLECTIVE_MODES)[number];
export type Collective = Exclude<CollectiveMode, 'auto'>;

/**
 * The default switch point of `auto`, in KiB of gradient buffer: measured in bench/RESULTS.md ("collective by
 * size"), where doubling stops beating the ring at N = 2–4 on this project's test links.
 */
export const DEFAULT_DOUBLING_MAX_KIB = 256;

export interface CollectiveChoice {
  mode: CollectiveMode;
  /** The gradient buffer every rank all-reduces. */
  bufferBytes: number;
  worldSize: number;
  compress: string;
  doublingMaxKib: number;
}

export function chooseCollective({ mode, bufferBytes, worldSize, compress, doublingMaxKib }: CollectiveChoice): Collective {
  if (mode !== 'auto') return mode;
  if (worldSize < 2 || compress !== 'none') return 'ring';
  return bufferBytes <= doublingMaxKib * 1024 ? 'doubling' : 'ring';
}

/** Refuses a combination no collective serves: compression exists on the ring only (CONFIG_INVALID, before any worker joins). */
export function checkCollective(config: { collective: CollectiveMode; compress: string }): void {
  if (config.collective === 'doubling' && config.compress !== 'none') {
    throw new MnistDdpError('CONFIG_INVALID', `--compress ${config.compress} compresses the ring's frames, and --collective doubling sends float32: pass --collective ring (or auto, which keeps the ring when compressing)`, {
      key: 'collective', collective: config.collective, compress: config.compress,
    });
  }
}
