import type * as zmq from 'zeromq';
import { MnistDdpError } from '../../shared/core/errors.js';
import { PROTOCOL_VERSION } from '../../shared/wire/ring-messages.js';

/**
 * Every inbox was bound before the coordinator sent the collective's membership, so a first connection to a peer's
 * inbox that fails (refused, no route, no answer within `connectTimeoutMs`, or a handshake with whatever else listens
 * at that address) will not succeed by waiting: `fail` gets PEER_UNREACHABLE naming the address at once, instead of a
 * start-up deadline blaming whichever rank is silent (issue #16). A connection counts once its ZMTP handshake succeeds
 * (a TCP connect alone can reach another process that happens to hold that port); one that was up and dropped means
 * the peer went away (PEER_LOST's business). `ignore()` true (closed) silences it. Resolves once the handshake
 * succeeded, rejects with what `fail` got: a collective is ready only when its own links are up too, since hearing
 * every peer says nothing about whether this rank's frames reach them (a rank whose outgoing link never came up
 * would otherwise pass its barrier and leave its peer to wait out the deadline).
 */
export function watchFirstConnect(
  socket: zmq.Push,
  peer: { rank: number; to: number; address: string; generation: number; connectTimeoutMs: number },
  fail: (err: MnistDdpError) => void,
  ignore: () => boolean,
): Promise<void> {
  let established = false;
  const { rank, to, address, generation, connectTimeoutMs } = peer;
  return new Promise<void>((resolve, reject) => {
    const report = (why: string): void => {
      if (established || ignore()) return;
      const err = new MnistDdpError('PEER_UNREACHABLE',
        `rank ${rank} could not connect to rank ${to}'s ring inbox at ${address} (${why}): ` +
        `that address must be rank ${to}'s on a network this host reaches (set it with --advertise-host on that worker), and a firewall must let its port through (--ring-ports)`,
        { missingRank: to, rank, address, generation });
      fail(err);
      reject(err);
    };
    socket.events.on('handshake', () => {
      established = true;
      resolve();
    });
    socket.events.on('connect:retry', () => report(`refused, no route, or no answer within ${connectTimeoutMs} ms`));
    socket.events.on('handshake:error:protocol', (e) => report(`the process listening there failed the handshake: ${e.error.code ?? e.error.message}`));
    socket.events.on('handshake:error:auth', () => report('the process listening there refused this rank\'s key'));
  });
}

/**
 * Hands every message the inbox receives to `onFrame` until the collective closes; a receive that fails while open
 * ends it with PEER_LOST (`onLost`). Once closed (its inbox possibly left bound after a failed start-up), what still
 * arrives is for no one.
 */
export async function receiveFrames(
  inbox: zmq.Pull, rank: number, closed: () => boolean, onFrame: (parts: Buffer[]) => void, onLost: (err: MnistDdpError) => void,
): Promise<void> {
  for (;;) {
    let parts: Buffer[];
    try {
      parts = await inbox.receive();
    } catch (err) {
      if (closed()) return;
      onLost(new MnistDdpError('PEER_LOST', `rank ${rank} can no longer receive: ${(err as Error).message}`, { rank }, { cause: err }));
      return;
    }
    if (closed()) return;
    onFrame(parts);
  }
}

/**
 * Why `allReduce(…, step)` may not start now, or undefined: the collective is closed (PEER_LOST), an earlier call has
 * not settled (ALLREDUCE_BUSY), or `step` is not an integer above the previous one (STEP_OUT_OF_ORDER).
 */
export function allReduceCallProblem(rank: number, step: number, state: { closed: boolean; running?: number; lastStep: number }): MnistDdpError | undefined {
  if (state.closed) return new MnistDdpError('PEER_LOST', `rank ${rank}: allReduce called after close()`, { rank });
  if (state.running !== undefined) {
    return new MnistDdpError('ALLREDUCE_BUSY', `rank ${rank}: allReduce(step ${step}) called while step ${state.running} is still running; await each all-reduce before the next`, {
      rank, step, running: state.running,
    });
  }
  if (!Number.isSafeInteger(step) || step <= state.lastStep) {
    return new MnistDdpError('STEP_OUT_OF_ORDER', `rank ${rank}: step ${step} must be an integer above the previous step ${state.lastStep}`, {
      rank, step, previousStep: state.lastStep,
    });
  }
  return undefined;
}

/** Resolves when `drained` settles or after `ms`, whichever is first: close() never hangs on a dead peer. */
export async function drainWithin(drained: Promise<unknown>, ms: number): Promise<void> {
  if (ms <= 0) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([drained, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/**
 * A collective's start-up: waits for its barrier (`ready`). Aborting `signal` (the coordinator announced a new
 * generation) closes it at once; on any failure it is closed, leaving a caller's own inbox bound (`keepInbox`: the
 * predecessor may not have connected yet, and a closed inbox would make it blame this rank), and the error rethrown.
 */
export async function untilReady(ready: () => Promise<void>, close: (keepInbox: boolean) => Promise<void>, signal: AbortSignal | undefined, keepInbox: boolean): Promise<void> {
  const abort = (): void => void close(false);
  signal?.addEventListener('abort', abort, { once: true });
  try {
    if (signal?.aborted) abort();
    await ready();
  } catch (err) {
    await close(keepInbox);
    throw err;
  } finally {
    signal?.removeEventListener('abort', abort);
  }
}

/** A peer's hello that speaks another protocol version or counts another world size, or undefined (HANDSHAKE_MISMATCH). */
export function helloMismatch(hello: { protocolVersion: number; worldSize: number }, from: number, rank: number, worldSize: number): MnistDdpError | undefined {
  if (hello.protocolVersion === PROTOCOL_VERSION && hello.worldSize === worldSize) return undefined;
  return new MnistDdpError(
    'HANDSHAKE_MISMATCH',
    `rank ${from} speaks protocol ${hello.protocolVersion} with world size ${hello.worldSize}; rank ${rank} speaks protocol ${PROTOCOL_VERSION} with world size ${worldSize}. Run the same mnist-ddp version and membership everywhere`,
    { theirs: { protocolVersion: hello.protocolVersion, worldSize: hello.worldSize, rank: from }, ours: { protocolVersion: PROTOCOL_VERSION, worldSize, rank } },
  );
}

/**
 * `links` (watchFirstConnect's promises, joined), failing with PEER_UNREACHABLE when they are not all up within `ms`:
 * a handshake that neither succeeds nor fails (a process at that address that never answers it) must not hold a
 * start-up past its deadline.
 */
export function linksUpWithin(links: Promise<void>, ms: number, rank: number, generation: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new MnistDdpError('PEER_UNREACHABLE',
      `rank ${rank}'s connections to its peers' ring inboxes were not all up within ${ms} ms (generation ${generation}): a process at one of those addresses accepted the connection but never completed the handshake`,
      { rank, generation, timeoutMs: ms })), ms);
    timer.unref();
  });
  return Promise.race([links, late]).finally(() => clearTimeout(timer));
}
