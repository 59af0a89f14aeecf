import { randomBytes } from 'node:crypto';
import { isMnistDdpError, MnistDdpError, type ErrorCode } from '../shared/core/errors.js';
import type { Collective } from '../shared/wire/collectives.js';
import { LINK_TOKEN_BYTES } from '../shared/wire/ring-messages.js';
import { doublingSchedule } from '../shared/wire/doubling-schedule.js';
import type { Logger } from '../shared/core/log.js';
import type { ControlServer } from './control-server.js';
import type { Membership, WorkerRecord } from './membership.js';
import { describeWorkers, type ReplyCollector } from './stall.js';
import { unreachableInboxes, type UnreachableInbox } from './inbox-reachability.js';

export interface RingFormationSettings {
  requestTimeoutMs: number;
  /** Hand out ring keys: each inbox admits only its predecessor's key; each rank learns its successor's. */
  curve?: boolean;
  log: Logger;
  onMembershipChange?: (active: readonly WorkerRecord[], generation: number) => void;
  /** An unreachable inbox is survived (its worker refused, the ring re-planned without it) instead of failing the run. */
  elastic?: boolean;
  /** Refuses a worker whose ring inbox its peers cannot reach: a reject with `code` and `message`, then it is gone. */
  refuse?: (w: WorkerRecord, code: ErrorCode, message: string) => void;
  /** The all-reduce for a generation of this many ranks (shared/wire/collectives.ts); absent: the ring. */
  collectiveFor?: (worldSize: number) => Collective;
}

/** Who sends to whom: rank r's senders (its inbox admits their keys) and receivers, for the generation's collective. */
function linksOf(collective: Collective, worldSize: number): { sendsTo: number[][]; receivesFrom: number[][] } {
  const ranks = [...Array(worldSize).keys()];
  if (collective === 'ring') return { sendsTo: ranks.map((r) => [(r + 1) % worldSize]), receivesFrom: ranks.map((r) => [(r - 1 + worldSize) % worldSize]) };
  const schedules = ranks.map((r) => doublingSchedule(r, worldSize));
  return { sendsTo: schedules.map((s) => [...s.sendsTo]), receivesFrom: schedules.map((s) => [...s.receivesFrom]) };
}

/**
 * A fresh secret per directed link s → d, as hex, handed to s (to send with) and d (to check with): with several
 * senders admitted by one inbox (recursive doubling), it is what proves which of them sent a frame. New every
 * generation, so a token of a past membership proves nothing.
 */
function linkTokens(sendsTo: readonly number[][]): { send: Record<string, string>; receive: Record<string, string> }[] {
  const out = sendsTo.map(() => ({ send: {} as Record<string, string>, receive: {} as Record<string, string> }));
  sendsTo.forEach((targets, s) => {
    for (const d of targets) {
      const token = randomBytes(LINK_TOKEN_BYTES).toString('hex');
      out[s]!.send[d] = token;
      out[d]!.receive[s] = token;
    }
  });
  return out;
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
  // Ranks are positions in `ring`: rank r's inbox admits only the keys of the ranks that send to it (on a ring, r-1).
  const collective = settings.collectiveFor?.(ring.length) ?? 'ring';
  const { sendsTo, receivesFrom } = linksOf(collective, ring.length);
  const senderKeys = (w: WorkerRecord): { allowKeys?: string[] } => (ringKeys ? { allowKeys: receivesFrom[w.rank]!.map((r) => ringKeys[r]!) } : {});
  const tokens = ringKeys && collective === 'doubling' ? linkTokens(sendsTo) : undefined;
  const inboxReplies = replies.collect('inbox', ring, requestTimeoutMs, `generation ${generation} ring set-up`, { match: (m) => m.generation === generation });
  await server.broadcast(ring, (w) => ({ type: 'open-inbox', generation, ...senderKeys(w) }), inboxReplies);
  const inboxes = await inboxReplies;
  const peers = ring.map((w) => inboxes.get(w.id)!.endpoint);
  const unreachable = unreachableInboxes(ring, new Map(ring.map((w) => [w.id, inboxes.get(w.id)!.endpoint])));
  if (unreachable.length > 0) throw refuseUnreachable(unreachable, generation, settings);
  const ready = replies.collect('ring-ready', ring, requestTimeoutMs, `generation ${generation} ring barrier`, {
    match: (m) => m.generation === generation,
    // A worker whose ring barrier failed (a peer died during set-up) says so at once (step -1): re-plan now.
    matchError: (e) => e.generation === generation && e.step === -1,
  });
  await server.broadcast(ring, (w) => ({
    type: 'ring', generation, rank: w.rank, worldSize: ring.length, peers, collective, ...(ringKeys ? { keys: ringKeys } : {}), ...(tokens ? { links: tokens[w.rank]! } : {}),
  }), ready);
  try {
    await ready;
  } catch (err) {
    // A rank could not connect to its successor's inbox (it says so at once): the fault is the successor's address
    // (or the path to it), not whichever rank the others fell silent behind.
    if (!isMnistDdpError(err) || err.details.workerCode !== 'PEER_UNREACHABLE') throw err;
    const target = ring.find((w) => w.rank === (err.details.missingRanks as number[] | undefined)?.[0]);
    const reporter = ring.find((w) => w.rank === err.details.rank);
    if (!target || !reporter) throw err;
    throw refuseUnreachable([{ worker: target, endpoint: peers[target.rank]!, reason: `${describeWorkers([reporter])} could not connect to it: ${err.message}` }], generation, settings);
  }
  members.activate(ring);
  log.info({ generation, collective, workers: ring.map((w) => ({ rank: w.rank, worker: w.id, host: w.host })), peers }, `ring formed: ${ring.length} worker(s), generation ${generation}, ${collective} all-reduce`);
  settings.onMembershipChange?.(ring, generation);
}

/**
 * Refuses every worker whose inbox cannot be reached (it learns why and what to set) and returns the error that ends
 * this formation: recoverable in an elastic run, so the ring is re-planned without them; the run's failure otherwise.
 */
function refuseUnreachable(found: readonly UnreachableInbox<WorkerRecord>[], generation: number, settings: RingFormationSettings): MnistDdpError {
  for (const { worker, endpoint, reason } of found) {
    settings.log.error({ worker: worker.id, rank: worker.rank, endpoint, generation }, `refusing worker ${worker.id} (rank ${worker.rank}, ${worker.host} pid ${worker.pid}): ${reason}`);
    settings.refuse?.(worker, 'PEER_UNREACHABLE', `the coordinator refused this worker (generation ${generation}): ${reason}`);
  }
  const named = found.map(({ worker, endpoint, reason }) => `${describeWorkers([worker])} at ${endpoint}: ${reason}`).join('; ');
  return new MnistDdpError('PEER_UNREACHABLE', `generation ${generation} ring set-up: unreachable ring inbox of ${named}`, {
    missingRanks: found.map((f) => f.worker.rank), endpoints: found.map((f) => f.endpoint), recoverable: settings.elastic === true,
  });
}
