import { MnistDdpError } from '../shared/core/errors.js';
import type { Logger } from '../shared/core/log.js';
import type { ControlServer } from './control-server.js';
import type { Membership, WorkerRecord } from './membership.js';
import type { ReplyCollector } from './stall.js';

export interface RingFormationSettings {
  requestTimeoutMs: number;
  /** Hand out ring keys: each inbox admits only its predecessor's key; each rank learns its successor's. */
  curve?: boolean;
  log: Logger;
  onMembershipChange?: (active: readonly WorkerRecord[], generation: number) => void;
}

/**
 * Forms the next generation's ring: ranks by worker id over the admitted workers that are not leaving
 * (Membership.beginGeneration), then open-inbox → inbox (each rank's ring endpoint) → ring (everyone's peers) →
 * ring-ready (the ring's own barrier passed). Only then do the members become the active ones.
 */
export async function formRing(server: ControlServer, members: Membership, replies: ReplyCollector, settings: RingFormationSettings): Promise<void> {
  const { requestTimeoutMs, log } = settings;
  const ring = members.beginGeneration();
  const generation = members.generation;
  if (ring.length === 0) throw new MnistDdpError('PEER_LOST', `generation ${generation}: no workers left to train with`, {});
  const keys = settings.curve ? ring.map((w) => w.ringKey) : undefined;
  if (keys?.some((k) => k === undefined)) throw new MnistDdpError('INVARIANT_VIOLATED', `generation ${generation}: a worker of a CURVE run has no ring key`, {});
  const ringKeys = keys as string[] | undefined;
  // Ranks are positions in `ring`: rank r's inbox admits only rank r-1's key.
  const predecessorKey = (w: WorkerRecord): { allowKey?: string } => (ringKeys ? { allowKey: ringKeys[(w.rank - 1 + ring.length) % ring.length]! } : {});
  const inboxReplies = replies.collect('inbox', ring, requestTimeoutMs, `generation ${generation} ring set-up`, { match: (m) => m.generation === generation });
  await server.broadcast(ring, (w) => ({ type: 'open-inbox', generation, ...predecessorKey(w) }), inboxReplies);
  const inboxes = await inboxReplies;
  const peers = ring.map((w) => inboxes.get(w.id)!.endpoint);
  const ready = replies.collect('ring-ready', ring, requestTimeoutMs, `generation ${generation} ring barrier`, {
    match: (m) => m.generation === generation,
    // A worker whose ring barrier failed (a peer died during set-up) says so at once (step -1): re-plan now.
    matchError: (e) => e.generation === generation && e.step === -1,
  });
  await server.broadcast(ring, (w) => ({ type: 'ring', generation, rank: w.rank, worldSize: ring.length, peers, ...(ringKeys ? { keys: ringKeys } : {}) }), ready);
  await ready;
  members.activate(ring);
  log.info({ generation, workers: ring.map((w) => ({ rank: w.rank, worker: w.id, host: w.host })), peers }, `ring formed: ${ring.length} worker(s), generation ${generation}`);
  settings.onMembershipChange?.(ring, generation);
}
