/**
 * ZeroMQ's maxMessageSize for every socket, from the largest frame the protocol legitimately sends to it. libzmq
 * checks a frame's announced size before it allocates memory for it, and a peer that announces more is
 * disconnected: the frame never reaches the application and never costs memory (issue #15: 256 MiB frames raised
 * the coordinator's RSS by 290 MiB). The limit applies to each message part separately.
 */

/** A frame's MessagePack fields around its floats, plus CURVE's per-message box (33 bytes), with room to spare. */
export const FRAME_HEADROOM_BYTES = 64 * 1024;

/**
 * Optimiser slots per parameter, at most (Adam: first and second moments); a state transfer carries the weights and
 * these (control-payloads.ts replicaSnapshotSchema).
 */
const MAX_OPTIMIZER_SLOTS = 2;

/**
 * Inbound limit of a ring inbox: one chunk of `chunkBytes` (the largest message part: a ring-chunk's floats) plus
 * headroom for the header part.
 */
export function ringFrameLimit(chunkBytes: number): number {
  return chunkBytes + FRAME_HEADROOM_BYTES;
}

/**
 * Inbound limit of a control socket for a model of `weightCount` weights (trainable, frozen and statistics): the
 * largest control frame is a state transfer (snapshot, load-state), the weights plus every optimiser slot, as
 * float32; evaluation replies and the rest are far smaller. Twice that covers encoding overhead with room to spare.
 */
export function controlFrameLimit(weightCount: number): number {
  return 2 * 4 * weightCount * (1 + MAX_OPTIMIZER_SLOTS) + FRAME_HEADROOM_BYTES;
}

/**
 * A worker connects before it knows the run's model (the config arrives in the coordinator's welcome), so its
 * control socket takes the limit of the zoo's largest model: cnn-large, 468 778 weights (checked against the zoo by
 * test/integration/transport-security.test.ts). A fine-tune from a larger external model needs this raised.
 */
export const LARGEST_ZOO_WEIGHT_COUNT = 468_778;
export const WORKER_CONTROL_FRAME_LIMIT = controlFrameLimit(LARGEST_ZOO_WEIGHT_COUNT);
