/**
 * Gradient all-reduce between the workers of one run. The step code calls the same interface in every mode:
 * `LocalReducer` for a single process, `RingAllReducer` (worker/ring/ring-allreduce.ts) over ZeroMQ for several.
 */
export interface AllReduceOptions {
  /** Overrides the reducer's inactivity deadline for this call. */
  timeoutMs?: number;
  /**
   * Floats at the start of `buf` that a compressing reducer may carry in 16 bits (the trainable gradients: error
   * feedback makes up for the rounding over steps); the rest is summed exactly. Default: all of `buf`. Every rank
   * must pass the same value.
   */
  compressible?: number;
}

export interface AllReducer {
  readonly rank: number;
  readonly worldSize: number;
  /**
   * Element-wise SUM over all ranks, in place: resolves with `buf` itself holding the sum (the trainer divides by
   * the total sample count). Every rank must call it with the same `step` and the same `buf.length`; steps must
   * increase from call to call. The caller must not read or write `buf` until the promise settles; after a
   * rejection its contents are unspecified.
   */
  allReduce(buf: Float32Array, step: number, opts?: AllReduceOptions): Promise<Float32Array>;
  /**
   * A zeroed buffer of `length` floats for allReduce. Any Float32Array works; the ring sums into one from here in
   * place (it lives in the memory of the ring's SIMD add) instead of copying each received chunk in and out.
   */
  allocate(length: number): Float32Array;
  /** Releases sockets; a pending allReduce rejects. Idempotent. */
  close(): Promise<void>;
  /** Payload bytes this reducer has sent so far (frame headers not counted): what each collective really moves. */
  readonly bytesSent: number;
  /**
   * Relative rounding of the values a lossy reducer puts on the wire (2^-11 for fp16, 2^-8 for bf16); absent: the
   * sums are exact float32. Checks that compare a sum's norm with its terms' widen their tolerance by it.
   */
  readonly wireRoundoff?: number;
  /**
   * The caller will not apply the latest sum (the step was skipped on every rank): a reducer whose sums carry state
   * into the next (a compressed ring's error feedback) drops it, so nothing of the skipped step reaches a later one.
   */
  discardCarry?(): void;
}

/** World size 1: the sum over one rank is the buffer itself. */
export class LocalReducer implements AllReducer {
  readonly rank = 0;
  readonly worldSize = 1;
  readonly bytesSent = 0;

  allReduce(buf: Float32Array): Promise<Float32Array> {
    return Promise.resolve(buf);
  }

  allocate(length: number): Float32Array {
    return new Float32Array(length);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
