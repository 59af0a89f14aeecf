import { z } from 'zod';
import { decode } from './codec.js';
import { PROTOCOL_VERSION } from './ring-messages.js';
import { isZ85Key } from '../security/keys.js';
import { evalSplitSchema, evaluationCountsSchema, replicaSnapshotSchema, stepPlanSchema, stepReportSchema, uint } from './control-payloads.js';

/**
 * Control plane between the coordinator (ZeroMQ ROUTER) and its workers (DEALER): membership, ring formation,
 * step orders, evaluation and state transfer. Gradients never travel here; they go round the ring (ring-messages.ts).
 *
 * Frames are msgpackr maps (codec.ts); decode gives `unknown`, and `parseControl` is the only way in: a zod
 * discriminated union on `type`, so a frame is either a fully typed message or a coded FRAME_MALFORMED error.
 * Messages that carry a domain record (a step plan, a step report, a replica's state, evaluation counts) extend
 * its schema from control-payloads.ts.
 */
export { PROTOCOL_VERSION };

const z85Key = z.string().refine(isZ85Key, 'expected a Z85 CURVE public key (40 characters)');

// worker → coordinator. A worker knows only the coordinator's address: it says hello, receives the run's config
// in `welcome`, builds its replica, and then joins with what it built so the coordinator can compare layouts.
export const helloMessage = z.object({
  type: z.literal('hello'),
  protocolVersion: uint,
  host: z.string(),
  pid: uint,
  instance: uint,
  metricsPort: uint,
  /**
   * The public half of the CURVE keypair this worker made for its ring sockets at start-up (absent in plaintext
   * runs). It reaches the coordinator over the authenticated control connection, and only through it: ring peers
   * admit exactly the keys the coordinator hands out.
   */
  ringKey: z85Key.optional(),
  /**
   * The local address of this worker's route to the coordinator (issue #16). Workers with the same `via` share a
   * host; the coordinator refuses a loopback inbox in a ring with members on other hosts, who could never dial it.
   */
  via: z.string().max(100).optional(),
  /** The interface its /metrics listens on (0.0.0.0: all): what the Prometheus targets file may list for it. */
  metricsHost: z.string().max(100).optional(),
  /**
   * What this worker trains on: its tfjs backend and, on webgpu, the GPU adapter (backend.ts deviceLabel). With
   * --balance auto, a ring whose workers name different devices splits each step by measured throughput.
   */
  device: z.string().max(200).optional(),
});
export const joinMessage = z.object({
  type: z.literal('join'),
  workerId: uint,
  model: z.string(),
  layoutChecksum: z.string(),
  shapes: z.array(z.string()),
});
export const inboxMessage = z.object({ type: z.literal('inbox'), generation: uint, endpoint: z.string().regex(/^(tcp|ipc):\/\/.+/) });
export const ringReadyMessage = z.object({ type: z.literal('ring-ready'), generation: uint });
export const stepDoneMessage = stepReportSchema.extend({
  type: z.literal('step-done'),
  generation: uint,
  step: uint,
  /** The replica's weights digest, when the step order asked for one. */
  digest: z.string().optional(),
});
export const evaluationMessage = evaluationCountsSchema.extend({ type: z.literal('evaluation'), requestId: uint, rank: uint });
/** `appliedStep`: the last step this replica applied (-1: none). */
export const snapshotMessage = replicaSnapshotSchema.extend({ type: z.literal('snapshot'), requestId: uint, appliedStep: z.number().int() });
export const workerErrorMessage = z.object({
  type: z.literal('worker-error'),
  generation: uint,
  step: z.number().int(),
  code: z.string(),
  message: z.string(),
  missingRank: uint.optional(),
});
/**
 * This worker leaves at the next step boundary, or, with `rank`, asks that the worker holding that rank of the current
 * ring be evicted there (--on-anomaly evict named it for anomalous gradients, issue #15).
 */
export const leaveMessage = z.object({ type: z.literal('leave'), reason: z.string(), rank: uint.optional() });
/** Sent every second between steps; the coordinator declares a worker gone when it stays silent. */
export const heartbeatMessage = z.object({ type: z.literal('heartbeat'), workerId: uint });

// coordinator → worker
/**
 * `heartbeatTimeoutMs`: the coordinator's --heartbeat-timeout-ms. When it is given, the coordinator answers every
 * heartbeat (heartbeat-ack), and a worker that hears nothing for well past it knows it was dropped (issue #16).
 */
export const welcomeMessage = z.object({ type: z.literal('welcome'), protocolVersion: uint, workerId: uint, config: z.record(z.string(), z.unknown()), heartbeatTimeoutMs: uint.optional() });
/** Sent once the coordinator accepted a join; the worker waits for open-inbox / ring / load-state. */
export const admittedMessage = z.object({ type: z.literal('admitted'), workerId: uint });
export const rejectMessage = z.object({ type: z.literal('reject'), code: z.string(), message: z.string() });
/**
 * `allowKeys`: the ring keys of the ranks that send to this one in the new generation (CURVE runs), the only clients
 * its inbox admits: the predecessor on a ring, the partners in recursive doubling.
 */
export const openInboxMessage = z.object({ type: z.literal('open-inbox'), generation: uint, allowKeys: z.array(z85Key).min(1).max(64).optional() });
/** A link token (doubling-allreduce.ts LinkTokens) as 32 hex digits, by the peer's rank. */
const linkTokens = z.record(z.string().regex(/^\d+$/), z.string().regex(/^[0-9a-f]{32}$/));
/**
 * `keys`: each rank's ring key, by rank (CURVE runs); a rank connects to the inbox of each rank it sends to as a
 * client of that rank's key. `collective`: the all-reduce of this generation (shared/wire/collectives.ts). `links`:
 * recursive doubling's link tokens for this rank (CURVE runs), which bind each frame to its sender.
 */
export const ringMessage = z.object({
  type: z.literal('ring'), generation: uint, rank: uint, worldSize: uint, peers: z.array(z.string()), keys: z.array(z85Key).optional(),
  collective: z.enum(['ring', 'doubling']).default('ring'),
  links: z.object({ send: linkTokens, receive: linkTokens }).optional(),
});
export const loadStateMessage = replicaSnapshotSchema.extend({ type: z.literal('load-state'), generation: uint, appliedStep: z.number().int() });
/** `digest`: report the replica's weights digest with this step (the coordinator compares them across ranks). */
export const stepMessage = stepPlanSchema.extend({ type: z.literal('step'), digest: z.boolean() });
export const evaluateMessage = z.object({ type: z.literal('evaluate'), requestId: uint, split: evalSplitSchema, mistakes: uint });
export const snapshotRequestMessage = z.object({ type: z.literal('snapshot-request'), requestId: uint });
export const stopMessage = z.object({ type: z.literal('stop'), reason: z.string() });
/**
 * Generation `generation` is over (a member was lost): a worker ends the all-reduce it is waiting in now, instead of
 * running out its ring timeout, and answers the orders queued behind it as failed (issue #14).
 */
export const abortMessage = z.object({ type: z.literal('abort'), generation: uint, reason: z.string() });
/**
 * This coordinator does not know the sender (it restarted, or declared the worker gone): say hello again and rejoin
 * as a new worker (issue #14).
 */
export const helloAgainMessage = z.object({ type: z.literal('hello-again'), reason: z.string() });
/** The answer to a member's heartbeat: the coordinator still hears it (and it hears the coordinator). */
export const heartbeatAckMessage = z.object({ type: z.literal('heartbeat-ack') });

export const workerToCoordinator = z.discriminatedUnion('type', [
  helloMessage, joinMessage, inboxMessage, ringReadyMessage, stepDoneMessage, evaluationMessage, snapshotMessage, workerErrorMessage, leaveMessage, heartbeatMessage,
]);
export const coordinatorToWorker = z.discriminatedUnion('type', [
  welcomeMessage, admittedMessage, rejectMessage, openInboxMessage, ringMessage, loadStateMessage, stepMessage, evaluateMessage, snapshotRequestMessage, stopMessage,
  abortMessage, helloAgainMessage, heartbeatAckMessage,
]);

export type WorkerMessage = z.infer<typeof workerToCoordinator>;
export type CoordinatorMessage = z.infer<typeof coordinatorToWorker>;
export type NarrowWorkerMessage<K extends WorkerMessage['type']> = Extract<WorkerMessage, { type: K }>;
export type NarrowCoordinatorMessage<K extends CoordinatorMessage['type']> = Extract<CoordinatorMessage, { type: K }>;

/**
 * Decodes (MessagePack) and validates one control frame's body; returns the message or a sentence naming what is
 * wrong (undecodable, or the first bad field). Never throws: both ends count and log the problem and keep serving.
 */
export function parseControl<S extends z.ZodTypeAny>(schema: S, body: Uint8Array | undefined): { ok: true; message: z.infer<S> } | { ok: false; problem: string } {
  let frame: unknown;
  try {
    frame = body ? decode(body) : undefined;
  } catch (err) {
    return { ok: false, problem: `undecodable frame: ${(err as Error).message}` };
  }
  const result = schema.safeParse(frame);
  if (result.success) return { ok: true, message: result.data };
  const issue = result.error.issues[0]!;
  return { ok: false, problem: `${issue.path.join('.') || 'frame'}: ${issue.message}` };
}
