import { NUM_CLASSES } from '../../src/shared/data/mnist.js';

/** One-hot encodes labels into `out` (size × numClasses), zeroing it first. */
export function oneHot(y: ArrayLike<number>, numClasses: number = NUM_CLASSES, out?: Float32Array): Float32Array {
  const n = y.length;
  const result = out && out.length >= n * numClasses ? out.subarray(0, n * numClasses) : new Float32Array(n * numClasses);
  result.fill(0);
  for (let i = 0; i < n; i++) result[i * numClasses + y[i]!] = 1;
  return result;
}
