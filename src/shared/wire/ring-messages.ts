import { COMPRESS_MODES, type CompressMode } from './half-float.js';

/**
 * Wire messages, one union keyed on `type`. Frames arrive from the network as `unknown` (codec.decode) and are
 * used only after a guard from this file accepted them. To add a message: declare its interface, add it to
 * `Message`, and add its validator to `MESSAGE_VALIDATORS` (the compiler insists on the last step).
 */

/** Bumped whenever a message changes shape; peers with different versions refuse each other at the handshake. */
export const PROTOCOL_VERSION = 6;

export const RING_PHASES = ['reduce-scatter', 'all-gather'] as const;
export type RingPhase = (typeof RING_PHASES)[number];

/** Ring barrier: every rank sends one (origin = itself) to its right neighbour, which forwards it until it has visited every rank. */
export interface RingHello {
  type: 'ring-hello';
  protocolVersion: number;
  generation: number;
  worldSize: number;
  /** Rank that sent this frame (the receiver's left neighbour). */
  rank: number;
  /** Rank that created this hello. */
  origin: number;
  /**
   * How gradients travel on this ring (--compress); every rank must say the same, or the ring refuses to form. Absent
   * only in hellos of protocol versions before 6, which the version check refuses.
   */
  compress?: CompressMode;
}

/**
 * One chunk of one segment of a ring all-reduce. `rank` is the sender (the receiver's left neighbour); `segment`
 * and `chunk` locate `data` in the flat gradient buffer (see worker/ring/topology.ts).
 */
export interface RingChunk {
  type: 'ring-chunk';
  generation: number;
  step: number;
  rank: number;
  phase: RingPhase;
  segment: number;
  chunk: number;
  /**
   * On a compressed ring (--compress fp16|bf16): how many of the chunk's floats travel as 16-bit values packed two
   * per word at the start of `data`, the rest following as float32 (worker/ring/chunk-compressor.ts). Absent: `data`
   * is the chunk's floats.
   */
  halves?: number;
  data: Float32Array;
}

/**
 * Recursive doubling's start-up barrier (worker/ring/doubling-allreduce.ts): one to every rank this rank sends to.
 * `token`: the secret the coordinator issued for this sender → receiver link in this generation (CURVE runs), which
 * binds the frame to its sender among the several peers the receiver's inbox admits.
 */
export interface DoublingHello {
  type: 'doubling-hello';
  protocolVersion: number;
  generation: number;
  worldSize: number;
  rank: number;
  token?: Uint8Array;
}

/** One chunk of one rank's partial sum in one round of recursive doubling (doubling-schedule.ts). */
export interface DoublingChunk {
  type: 'doubling-chunk';
  generation: number;
  step: number;
  rank: number;
  round: number;
  chunk: number;
  token?: Uint8Array;
  data: Float32Array;
}

/** Bytes of a link token (doubling-hello, doubling-chunk). */
export const LINK_TOKEN_BYTES = 16;

export type Message = RingHello | RingChunk | DoublingHello | DoublingChunk;
export type MessageType = Message['type'];
export type NarrowMessage<K extends MessageType> = Extract<Message, { type: K }>;

/** Returns undefined when `x` is valid, else a sentence naming the first bad field. */
type Validator = (x: Readonly<Record<string, unknown>>) => string | undefined;

const MAX_RANK = 65_535;

function isRecord(x: unknown): x is Readonly<Record<string, unknown>> {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !ArrayBuffer.isView(x);
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) return String(value);
  if (ArrayBuffer.isView(value)) return value.constructor.name;
  return typeof value;
}

function uintProblem(x: Readonly<Record<string, unknown>>, field: string, max = Number.MAX_SAFE_INTEGER): string | undefined {
  const value = x[field];
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= max) return undefined;
  return `field '${field}' is ${describe(value)}, expected an integer in [0, ${max}]`;
}

function firstProblem(...problems: (string | undefined)[]): string | undefined {
  return problems.find((p) => p !== undefined);
}

const validateRingHello: Validator = (x) =>
  firstProblem(
    uintProblem(x, 'protocolVersion'),
    uintProblem(x, 'generation'),
    uintProblem(x, 'worldSize', MAX_RANK + 1),
    uintProblem(x, 'rank', MAX_RANK),
    uintProblem(x, 'origin', MAX_RANK),
    x.compress === undefined || (typeof x.compress === 'string' && (COMPRESS_MODES as readonly string[]).includes(x.compress))
      ? undefined
      : `field 'compress' is ${describe(x.compress)}, expected one of ${COMPRESS_MODES.join(', ')}`,
  );

const validateRingChunk: Validator = (x) =>
  firstProblem(
    uintProblem(x, 'generation'),
    uintProblem(x, 'step'),
    uintProblem(x, 'rank', MAX_RANK),
    uintProblem(x, 'segment', MAX_RANK),
    uintProblem(x, 'chunk'),
    typeof x.phase === 'string' && (RING_PHASES as readonly string[]).includes(x.phase)
      ? undefined
      : `field 'phase' is ${describe(x.phase)}, expected one of ${RING_PHASES.join(', ')}`,
    x.data instanceof Float32Array ? undefined : `field 'data' is ${describe(x.data)}, expected a Float32Array`,
    x.halves === undefined || !(x.data instanceof Float32Array) ? undefined : uintProblem(x, 'halves') ?? halvesProblem(x.halves as number, x.data),
  );

/** 16-bit values fill whole words at the start of `data`: it must have room for them. */
function halvesProblem(halves: number, data: Float32Array): string | undefined {
  return Math.ceil(halves / 2) <= data.length ? undefined : `field 'halves' is ${halves}, more 16-bit values than data's ${data.length} words hold`;
}

function tokenProblem(x: Readonly<Record<string, unknown>>): string | undefined {
  const t = x.token;
  return t === undefined || (t instanceof Uint8Array && t.length === LINK_TOKEN_BYTES) ? undefined : `field 'token' is ${describe(t)}, expected ${LINK_TOKEN_BYTES} bytes`;
}

const validateDoublingHello: Validator = (x) =>
  firstProblem(
    uintProblem(x, 'protocolVersion'),
    uintProblem(x, 'generation'),
    uintProblem(x, 'worldSize', MAX_RANK + 1),
    uintProblem(x, 'rank', MAX_RANK),
    tokenProblem(x),
  );

const validateDoublingChunk: Validator = (x) =>
  firstProblem(
    uintProblem(x, 'generation'),
    uintProblem(x, 'step'),
    uintProblem(x, 'rank', MAX_RANK),
    uintProblem(x, 'round', 64),
    uintProblem(x, 'chunk'),
    tokenProblem(x),
    x.data instanceof Float32Array ? undefined : `field 'data' is ${describe(x.data)}, expected a Float32Array`,
  );

const MESSAGE_VALIDATORS: { readonly [K in MessageType]: Validator } = {
  'doubling-hello': validateDoublingHello,
  'doubling-chunk': validateDoublingChunk,
  'ring-hello': validateRingHello,
  'ring-chunk': validateRingChunk,
};

function isMessageType(type: unknown): type is MessageType {
  return typeof type === 'string' && Object.prototype.hasOwnProperty.call(MESSAGE_VALIDATORS, type);
}

/** Why `x` is not a valid message, or undefined when it is one. Use it for error messages after a guard said no. */
export function messageProblem(x: unknown): string | undefined {
  if (!isRecord(x)) return `frame is ${describe(x)}, expected a map`;
  if (!isMessageType(x.type)) return `field 'type' is ${describe(x.type)}, expected one of ${Object.keys(MESSAGE_VALIDATORS).join(', ')}`;
  return MESSAGE_VALIDATORS[x.type](x);
}

export function isMessage(x: unknown): x is Message {
  return messageProblem(x) === undefined;
}

/** Guard for one message type: `isMessageOf('ring-chunk', x)`. */
export function isMessageOf<K extends MessageType>(type: K, x: unknown): x is NarrowMessage<K> {
  return isRecord(x) && x.type === type && MESSAGE_VALIDATORS[type](x) === undefined;
}

export function isRingHello(x: unknown): x is RingHello {
  return isMessageOf('ring-hello', x);
}

export function isRingChunk(x: unknown): x is RingChunk {
  return isMessageOf('ring-chunk', x);
}

export function isDoublingHello(x: unknown): x is DoublingHello {
  return isMessageOf('doubling-hello', x);
}

export function isDoublingChunk(x: unknown): x is DoublingChunk {
  return isMessageOf('doubling-chunk', x);
}
