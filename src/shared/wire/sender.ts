/**
 * zeromq.js allows one send in flight per socket ("Socket is busy writing"), while the coordinator and workers
 * send from several async paths. This chains sends in call order; a failed send rejects its own caller only.
 */
export class SerialSender<T> {
  private tail: Promise<void> = Promise.resolve();

  constructor(private readonly sendNow: (frames: T) => Promise<void>) {}

  send(frames: T): Promise<void> {
    const result = this.tail.then(() => this.sendNow(frames));
    this.tail = result.catch(() => undefined);
    return result;
  }

  /** Settles once every send queued so far has been handed to ZeroMQ (or failed). */
  drained(): Promise<void> {
    return this.tail;
  }
}
