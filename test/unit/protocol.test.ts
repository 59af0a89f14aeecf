import { describe, expect, expectTypeOf, it } from 'vitest';
import { decode, encode } from '../../src/shared/wire/codec.js';
import {
  coordinatorToWorker,
  parseControl,
  workerToCoordinator,
  type NarrowCoordinatorMessage,
  type NarrowWorkerMessage,
} from '../../src/shared/wire/control-messages.js';
import type { ReplicaSnapshot, StepPlan, StepReport } from '../../src/shared/wire/control-payloads.js';
import type { OptimizerState } from '../../src/shared/train/optimizers.js';
import {
  isMessage,
  isMessageOf,
  isRingChunk,
  isRingHello,
  messageProblem,
  PROTOCOL_VERSION,
  type NarrowMessage,
  type RingChunk,
  type RingHello,
} from '../../src/shared/wire/ring-messages.js';

const chunk: RingChunk = {
  type: 'ring-chunk',
  generation: 2,
  step: 7,
  rank: 1,
  phase: 'reduce-scatter',
  segment: 0,
  chunk: 3,
  data: new Float32Array([1, 2]),
};
const hello: RingHello = { type: 'ring-hello', protocolVersion: PROTOCOL_VERSION, generation: 2, worldSize: 3, rank: 1, origin: 0, compress: 'none' };

describe('protocol guards', () => {
  it('accept valid messages, also after a trip through the codec', () => {
    expect(isRingChunk(chunk)).toBe(true);
    expect(isRingHello(hello)).toBe(true);
    expect(isMessage(decode(encode(chunk)))).toBe(true);
    expect(isRingChunk(decode(encode(chunk)))).toBe(true);
    expect(isRingHello(decode(encode(hello)))).toBe(true);
    expect(messageProblem(chunk)).toBeUndefined();
  });

  it('do not confuse message types', () => {
    expect(isRingHello(chunk)).toBe(false);
    expect(isRingChunk(hello)).toBe(false);
    expect(isMessageOf('ring-hello', hello)).toBe(true);
  });

  it.each([
    ['generation', -1],
    ['generation', 1.5],
    ['step', '7'],
    ['step', Number.NaN],
    ['rank', 70_000],
    ['segment', -3],
    ['chunk', null],
    ['chunk', 2 ** 60],
    ['phase', 'scatter'],
    ['phase', 1],
    ['data', [1, 2]],
    ['data', new Float64Array(2)],
    ['data', undefined],
    ['halves', -1],
    ['halves', 1.5],
    ['halves', 5], // 3 words needed, data has 2
  ])('reject ring-chunk with %s = %s and name the field', (field, value) => {
    const bad = { ...chunk, [field]: value };
    expect(isRingChunk(bad)).toBe(false);
    expect(isMessage(bad)).toBe(false);
    expect(messageProblem(bad)).toContain(`'${field}'`);
  });

  it('accept a compressed chunk whose 16-bit values fit its words (issue #16 item 5)', () => {
    expect(isRingChunk({ ...chunk, halves: 4 })).toBe(true);
    expect(isRingChunk({ ...chunk, halves: 3 })).toBe(true);
    expect(isRingChunk(decode(encode({ ...chunk, halves: 0 })))).toBe(true);
  });

  it.each([['protocolVersion', 'one'], ['worldSize', 0.5], ['origin', -1], ['rank', undefined], ['compress', 'fp8'], ['compress', 16]])('reject ring-hello with %s = %s', (field, value) => {
    const bad = { ...hello, [field]: value };
    expect(isRingHello(bad)).toBe(false);
    expect(messageProblem(bad)).toContain(`'${field}'`);
  });

  it.each([null, undefined, 3, 'ring-chunk', [chunk], new Float32Array(3), {}, { type: 'nope' }, { type: '__proto__' }, { type: 'toString' }])(
    'reject non-messages (%s)',
    (x) => {
      expect(isMessage(x)).toBe(false);
      expect(isRingChunk(x)).toBe(false);
      expect(typeof messageProblem(x)).toBe('string');
    },
  );

  it('narrow by type', () => {
    expectTypeOf<NarrowMessage<'ring-chunk'>>().toEqualTypeOf<RingChunk>();
    expectTypeOf<NarrowMessage<'ring-hello'>>().toEqualTypeOf<RingHello>();
    const x: unknown = decode(encode(chunk));
    if (isRingChunk(x)) expectTypeOf(x.data).toEqualTypeOf<Float32Array>();
  });
});

// Issue #12: control messages extend the domain records' schemas; replica state travels nested, as OptimizerState.
describe('control messages', () => {
  const optimizer: OptimizerState = { name: 'adam', step: 12, slots: [new Float32Array([1, 2]), new Float32Array([3, 4])] };
  const loadState: NarrowCoordinatorMessage<'load-state'> = { type: 'load-state', generation: 3, appliedStep: 11, weights: new Float32Array([5, 6, 7]), optimizer };

  it('carry the optimiser state nested, through the codec', () => {
    const parsed = parseControl(coordinatorToWorker, encode(loadState));
    expect(parsed.ok).toBe(true);
    if (!parsed.ok || parsed.message.type !== 'load-state') throw new Error('expected a load-state');
    expect(parsed.message.optimizer.name).toBe('adam');
    expect(parsed.message.optimizer.step).toBe(12);
    expect(parsed.message.optimizer.slots.map((s) => Array.from(s))).toEqual([[1, 2], [3, 4]]);
    expect(Array.from(parsed.message.weights)).toEqual([5, 6, 7]);
  });

  it('reject a bad or missing optimiser state, naming the nested field', () => {
    const badName = parseControl(coordinatorToWorker, encode({ ...loadState, optimizer: { ...optimizer, name: 'rmsprop' } }));
    expect(badName.ok).toBe(false);
    if (!badName.ok) expect(badName.problem).toContain('optimizer.name');
    const badSlot = parseControl(workerToCoordinator, encode({ type: 'snapshot', requestId: 1, appliedStep: 0, weights: new Float32Array(1), optimizer: { ...optimizer, slots: [[1, 2]] } }));
    expect(badSlot.ok).toBe(false);
    if (!badSlot.ok) expect(badSlot.problem).toContain('optimizer.slots.0');
    // The flat form (optimizerName/optimizerStep/slots beside the weights) is not a load-state.
    const flat = parseControl(coordinatorToWorker, encode({ type: 'load-state', generation: 3, appliedStep: 11, weights: new Float32Array(1), optimizerName: 'adam', optimizerStep: 12, slots: [] }));
    expect(flat.ok).toBe(false);
    if (!flat.ok) expect(flat.problem).toContain('optimizer');
  });

  it('are the domain records plus routing fields', () => {
    expectTypeOf<NarrowCoordinatorMessage<'load-state'>>().toMatchTypeOf<ReplicaSnapshot>();
    expectTypeOf<NarrowWorkerMessage<'snapshot'>>().toMatchTypeOf<ReplicaSnapshot>();
    expectTypeOf<ReplicaSnapshot['optimizer']>().toEqualTypeOf<OptimizerState>();
    expectTypeOf<NarrowWorkerMessage<'step-done'>>().toMatchTypeOf<StepReport>();
    expectTypeOf<Omit<NarrowWorkerMessage<'step-done'>, 'type' | 'generation' | 'step' | 'digest'>>().toEqualTypeOf<StepReport>();
    expectTypeOf<Omit<NarrowCoordinatorMessage<'step'>, 'type' | 'digest'>>().toEqualTypeOf<StepPlan>();
  });
});
