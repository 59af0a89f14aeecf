import { describe, expect, it } from 'vitest';
import { createOptimizer, optimizerConfigOf, type OptimizerConfig } from '../../src/shared/train/optimizers.js';

// The flat optimisers against PyTorch's update rules written out in float64 (torch.optim.SGD with momentum and
// torch.optim.Adam, both with weight_decay as L2 added to the gradient), over a few steps of changing gradients.

const P0 = [0.5, -1.25, 2, 0.001];
const grads = (step: number): number[] => P0.map((_, i) => Math.sin(step * 1.7 + i) * (i + 1));

function reference(config: OptimizerConfig, lr: number, steps: number): number[] {
  const p = [...P0];
  const m = p.map(() => 0);
  const v = p.map(() => 0);
  for (let t = 1; t <= steps; t++) {
    const g = grads(t).map((gi, i) => gi + config.weightDecay * p[i]!);
    for (let i = 0; i < p.length; i++) {
      if (config.name === 'sgd') {
        m[i] = config.momentum * m[i]! + g[i]!;
        p[i] = p[i]! - lr * m[i]!;
      } else {
        m[i] = 0.9 * m[i]! + 0.1 * g[i]!;
        v[i] = 0.999 * v[i]! + 0.001 * g[i]! * g[i]!;
        p[i] = p[i]! - (lr / (1 - 0.9 ** t)) * m[i]! / (Math.sqrt(v[i]! / (1 - 0.999 ** t)) + 1e-8);
      }
    }
  }
  return p;
}

function run(config: OptimizerConfig, lr: number, steps: number): Float32Array {
  const params = Float32Array.from(P0);
  const opt = createOptimizer(config, params.length);
  for (let t = 1; t <= steps; t++) opt.apply(params, Float32Array.from(grads(t)), lr);
  return params;
}

describe('flat optimisers', () => {
  it.each([
    ['sgd', 0.9, 0],
    ['sgd', 0.9, 0.01],
    ['adam', 0, 0],
    ['adam', 0, 0.01],
  ] as const)('%s (momentum %s, weight decay %s) follows the PyTorch update within float32 rounding', (name, momentum, weightDecay) => {
    const config = optimizerConfigOf({ optimizer: name, momentum, weightDecay });
    const got = run(config, 0.05, 6);
    const want = reference(config, 0.05, 6);
    got.forEach((g, i) => expect(g, `param ${i}`).toBeCloseTo(want[i]!, 5));
  });

  it('weight decay changes the result for both optimisers (it is not silently ignored)', () => {
    for (const name of ['sgd', 'adam'] as const) {
      const plain = run(optimizerConfigOf({ optimizer: name, momentum: 0.9, weightDecay: 0 }), 0.05, 6);
      const decayed = run(optimizerConfigOf({ optimizer: name, momentum: 0.9, weightDecay: 0.1 }), 0.05, 6);
      expect(Array.from(decayed), name).not.toEqual(Array.from(plain));
    }
  });

  it('a state round trip continues bit-identically', () => {
    for (const name of ['sgd', 'adam'] as const) {
      const config = optimizerConfigOf({ optimizer: name, momentum: 0.9, weightDecay: 0.01 });
      const a = Float32Array.from(P0);
      const optA = createOptimizer(config, a.length);
      for (let t = 1; t <= 3; t++) optA.apply(a, Float32Array.from(grads(t)), 0.05);
      const b = a.slice();
      const optB = createOptimizer(config, b.length);
      optB.load(optA.state());
      for (let t = 4; t <= 6; t++) {
        optA.apply(a, Float32Array.from(grads(t)), 0.05);
        optB.apply(b, Float32Array.from(grads(t)), 0.05);
      }
      expect(Array.from(b), name).toEqual(Array.from(a));
    }
  });
});
