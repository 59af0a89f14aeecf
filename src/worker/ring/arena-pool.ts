import { SumArena } from './sum-arena.js';

/**
 * Which SumArena a buffer is summed through: the one holding the buffer from `allocate` (summed in place), or one
 * per length for buffers from elsewhere, most recently used last (two: callers such as the benches alternate a
 * barrier with the real buffer).
 */
export class ArenaPool {
  private home: SumArena | undefined;
  private readonly byLength = new Map<number, SumArena>();

  /** A zeroed buffer of `length` floats inside a new arena; it replaces the previous one. */
  allocate(length: number): Float32Array {
    this.home = new SumArena(length, length);
    return this.home.home;
  }

  arenaFor(buf: Float32Array): SumArena {
    if (this.home?.holds(buf)) return this.home;
    const arena = this.byLength.get(buf.length) ?? new SumArena(0, buf.length);
    this.byLength.delete(buf.length);
    this.byLength.set(buf.length, arena);
    while (this.byLength.size > 2) this.byLength.delete(this.byLength.keys().next().value!);
    return arena;
  }

  /** Frames of a failed step may sit in ZeroMQ indefinitely: forget every arena so their staging is never reused. */
  retire(): void {
    this.byLength.clear();
    this.home = undefined;
  }
}
