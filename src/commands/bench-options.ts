import { z } from 'zod';
import { benchConfigSchema } from '../shared/core/config.js';
import { MnistDdpError } from '../shared/core/errors.js';

/*
 * `bench --profile` (issue #17): config.ts's bench schema plus the profiling keys, resolved like every other key
 * (flag over MNIST_DDP_PROFILE… over --config file over these defaults). Kept here, next to the command, while
 * config.ts is being changed by other work; the three keys can move into benchConfigSchema as they are.
 * Coercion matches config.ts's: flags and variables arrive as strings.
 */
const count = (min: number, max: number) => z.coerce.number({ invalid_type_error: 'expected a number' }).int('expected a whole number').min(min).max(max);
const flag = z.preprocess((v) => (typeof v === 'string' ? !['0', 'false', 'no', 'off', ''].includes(v.toLowerCase()) : v), z.boolean());

export const benchCommandSchema = benchConfigSchema.extend({
  /** After the timed windows, profile `profileSteps` steps with tf.profile and report time per kernel. */
  profile: flag.default(false),
  /** A few steps average out one step's jitter; each profiled step on webgpu is slow (one submit per kernel). */
  profileSteps: count(1, 100).default(3),
  /** Kernels listed, by time; the rest are summed on one line. */
  profileTop: count(1, 1000).default(15),
});
export type BenchCommandConfig = Readonly<z.infer<typeof benchCommandSchema>>;

/** --profile runs in this process (bench.ts): with worker processes (bench-distributed.ts) it is refused, not ignored. */
export function checkBenchCommand(config: BenchCommandConfig): void {
  if (config.profile && config.workers >= 1) {
    throw new MnistDdpError('CONFIG_INVALID', `--profile profiles the in-process bench, not ${config.workers} worker processes: drop --workers (or pass --workers 0)`, { key: 'profile', workers: config.workers });
  }
}
