import type { RingConfig } from './ring-allreduce.js';

/**
 * What a worker's main thread and its ring thread (ring-thread.ts) say to each other over the thread's MessagePort.
 * Requests carry an `id` and get exactly one reply with that id; `register-buffer` and `rejected-frame` are notices
 * without a reply. Both ends are this codebase, in one process, so the port's structured clone is the only codec.
 */
export type RingThreadRequest =
  | { kind: 'open-inbox'; id: number; bindAddress: string }
  | { kind: 'discard-inbox'; id: number }
  | { kind: 'connect'; id: number; ringId: number; config: RingConfig; logBindings: Record<string, unknown> }
  | { kind: 'all-reduce'; id: number; ringId: number; bufferId: number; length: number; step: number; timeoutMs?: number }
  | { kind: 'close-ring'; id: number; ringId: number }
  | { kind: 'shutdown'; id: number };

export type RingThreadNotice = { kind: 'register-buffer'; bufferId: number; memory: SharedArrayBuffer };

export type ToRingThread = RingThreadRequest | RingThreadNotice;

/** What each request resolves with. */
export interface RingThreadResults {
  'open-inbox': { endpoint: string };
  'discard-inbox': null;
  connect: { endpoint: string };
  'all-reduce': null;
  'close-ring': null;
  shutdown: null;
}

/** An error as it crosses the thread boundary; rebuilt as a MnistDdpError when `code` is one of ours. */
export interface ThreadError {
  code?: string;
  message: string;
  details?: Record<string, unknown>;
}

export type FromRingThread =
  | { kind: 'booted' }
  | { kind: 'boot-failed'; message: string }
  | { kind: 'reply'; id: number; ok: true; value: unknown }
  | { kind: 'reply'; id: number; ok: false; error: ThreadError }
  | { kind: 'rejected-frame'; ringId: number; error: ThreadError };
