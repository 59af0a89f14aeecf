import { decodeHalves, encodeHalvesWithError, type HalfFormat } from '../../shared/wire/half-float.js';

/** What one ring-chunk frame carries: `data`, and with compression the count of 16-bit values packed at its start. */
export interface ChunkPayload {
  data: Float32Array;
  halves?: number;
}

/** Error-feedback residuals kept for this many buffer lengths (a ring all-reduces one gradient buffer; benches alternate a barrier). */
const RESIDUAL_LENGTHS = 2;

/**
 * A compressed ring's chunks (--compress fp16|bf16, issue #16), with error feedback.
 *
 * Payload: the chunk's floats in [start, end) of the buffer that lie below the buffer's compressible prefix (the
 * trainable gradients) travel as `halves` 16-bit values packed two per 32-bit word of `data` (little-endian: the
 * lower-addressed value first; an odd count leaves a zero half), followed by the chunk's other floats as float32
 * (batch-norm statistics, loss, sample count, health slots: exact). Sums are made in float32; only the wire is 16-bit.
 *
 * Error feedback: every encoding this rank makes (its own contribution and the partial sums it forwards in
 * reduce-scatter, and the finished sum of the segment it owns) adds what it lost, value − decoded, to this rank's
 * residual for that float; `begin` adds the residual into the next buffer. The all-reduce is a sum, so the
 * bookkeeping is exact up to float32 rounding: over steps, the sums applied = the true sums − the residuals now held
 * (bounded by one rounding per float per rank), and nothing a 16-bit value cannot hold (underflow, fp16 saturation)
 * is lost for good. The owner of a segment keeps the decoded sum too, so every rank ends bit-identical.
 *
 * The residuals belong to one ring: `reset` drops them, and the ring calls it when a step fails (the buffer that
 * absorbed them was never applied; the ranks of the next generation may differ, and a rank that failed mid-step holds a
 * half-updated residual) and when the caller skips a step (residuals from gradients judged anomalous must not reach a
 * later step). Either loses at most one step's rounding errors.
 */
export class ChunkCompressor {
  private readonly residuals = new Map<number, Float32Array>();
  private residual: Float32Array = new Float32Array(0);
  private prefix = 0;
  /** Decoded floats of the chunk being applied; sumInto / set copy out of it at once. */
  private readonly decoded: Float32Array;

  constructor(readonly format: HalfFormat, chunkFloats: number) {
    this.decoded = new Float32Array(chunkFloats);
  }

  /**
   * Starts an all-reduce of `buf`, whose first `compressible` floats may travel as 16-bit values: adds the residual
   * (for buffers of this length) into them and starts a fresh one.
   */
  begin(buf: Float32Array, compressible: number): void {
    this.prefix = Math.min(Math.max(compressible, 0), buf.length);
    let residual = this.residuals.get(buf.length);
    this.residuals.delete(buf.length);
    if (!residual) residual = new Float32Array(buf.length);
    this.residuals.set(buf.length, residual);
    while (this.residuals.size > RESIDUAL_LENGTHS) this.residuals.delete(this.residuals.keys().next().value!);
    this.residual = residual;
    const n = this.prefix;
    for (let i = 0; i < n; i++) buf[i] = buf[i]! + residual[i]!;
    residual.fill(0, 0, n);
  }

  /** Drops every residual (see the class comment for when). */
  reset(): void {
    this.residuals.clear();
    this.residual = new Float32Array(0);
  }

  /** L2 norm of the residual of the latest all-reduce's buffer (what the applied sums still owe), for metrics. */
  residualNorm(): number {
    let sum = 0;
    for (const r of this.residual) sum += r * r;
    return Math.sqrt(sum);
  }

  /** Number of 16-bit values a chunk at [start, end) carries. */
  halvesIn(start: number, end: number): number {
    return Math.min(Math.max(this.prefix - start, 0), end - start);
  }

  /**
   * A fresh payload for `values`, the floats at [start, start + values.length) of the buffer: its own memory, so it
   * may go to ZeroMQ without a copy and `values` may change at once. The encoding errors go to the residual. With
   * `keepDecoded` (the owner's finished sum), `values` becomes what the receivers decode.
   */
  encode(values: Float32Array, start: number, keepDecoded = false): ChunkPayload {
    const halves = this.halvesIn(start, start + values.length);
    const words = (halves + 1) >> 1;
    const data = new Float32Array(words + values.length - halves);
    encodeHalvesWithError(this.format, values.subarray(0, halves), new Uint16Array(data.buffer, 0, halves), this.residual.subarray(start, start + halves), keepDecoded);
    data.set(values.subarray(halves), words);
    return { data, halves };
  }

  /**
   * The floats a received payload for [start, end) carries, decoded into scratch memory that the next call
   * overwrites; or a sentence saying why the payload does not fit the chunk.
   */
  decode(payload: ChunkPayload, start: number, end: number): Float32Array | string {
    const expected = this.halvesIn(start, end);
    const words = (expected + 1) >> 1;
    const { data, halves } = payload;
    if (halves !== expected || data.length !== words + end - start - expected) {
      return `chunk at [${start}, ${end}) carries ${halves ?? 'no'} 16-bit values in ${data.length} words, expected ${expected} in ${words + end - start - expected} (do all ranks compress the same ${this.prefix} floats with --compress ${this.format}?)`;
    }
    const out = this.decoded.subarray(0, end - start);
    decodeHalves(this.format, new Uint16Array(data.buffer, data.byteOffset, expected), out.subarray(0, expected));
    out.set(data.subarray(words), expected);
    return out;
  }

  /** A copy of a received payload, to forward in all-gather (received memory is never sent on; decoding is exact, so this equals re-encoding). */
  forward(payload: ChunkPayload): ChunkPayload {
    return { data: payload.data.slice(), halves: payload.halves ?? 0 };
  }
}
