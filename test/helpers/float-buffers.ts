/** Float32 buffers carried as base64 between test processes, and how far two of them differ. */

export const b64 = (a: Float32Array): string => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');

export const floats = (s: string): Float32Array => {
  const bytes = Buffer.from(s, 'base64');
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
};

/** max |a − b| / max |b| over [start, end): one tensor's normwise relative error (the difference itself if b is 0). */
export function relativeError(a: Float32Array, b: Float32Array, start: number, end: number): number {
  let diff = 0;
  let scale = 0;
  for (let i = start; i < end; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return scale === 0 ? diff : diff / scale;
}
