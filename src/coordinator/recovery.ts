import { MnistDdpError } from '../shared/core/errors.js';
import type { Logger } from '../shared/core/log.js';
import { firstSilentWorker, isSilent } from './liveness.js';
import type { Membership } from './membership.js';
import type { StateTransfer } from './state-transfer.js';

export interface RecoverySettings {
  /** A worker silent for this long is declared gone; half of it is enough once a step has failed. */
  heartbeatTimeoutMs: number;
  log: Logger;
  /** Forms the next generation's ring over the admitted workers (ring-formation.ts). */
  formRing: () => Promise<void>;
}

/**
 * After a failed step in an elastic run: waits until some active worker has been silent for half the heartbeat
 * timeout (a lost peer) or the whole timeout has passed (a step that failed with every worker alive), drops the
 * silent and the leaving workers, takes the state of the survivor that has applied the fewest steps (normally not
 * the failed one; if every survivor applied it, the driver commits it instead of redoing it), re-forms the ring,
 * loads that state everywhere and returns the last step it has applied.
 */
export async function recover(failedStep: number, members: Membership, transfer: StateTransfer, settings: RecoverySettings): Promise<number> {
  const { heartbeatTimeoutMs, log } = settings;
  const silenceMs = heartbeatTimeoutMs / 2;
  await firstSilentWorker(members.active, silenceMs, Date.now() + heartbeatTimeoutMs);
  const now = Date.now();
  for (const w of members.active) {
    if (w.leaving || isSilent(w, silenceMs, now)) {
      w.status = 'gone';
      log.warn({ worker: w.id, rank: w.rank }, `rank ${w.rank} (worker ${w.id}) is gone`);
    }
  }
  const survivors = members.active.filter((w) => w.status === 'active');
  if (survivors.length === 0) throw new MnistDdpError('PEER_LOST', `recovering step ${failedStep}: every worker is gone`, { failedStep });
  const states = await Promise.all(survivors.map((w) => transfer.snapshotFrom(w)));
  const base = states.reduce((a, b) => (b.appliedStep < a.appliedStep ? b : a));
  log.warn({ failedStep, survivors: survivors.length, restartFrom: base.appliedStep }, `recovering step ${failedStep} with ${survivors.length} worker(s)`);
  await settings.formRing();
  await transfer.load(members.active, members.generation, base);
  return base.appliedStep;
}
