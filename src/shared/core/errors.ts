/**
 * One error type for the whole product. Every failure a user or operator can cause carries a stable `code`
 * (tests assert the code, not the message); the message names the bad value and says what to do.
 */
export const ERROR_CODES = {
  // configuration and command line
  CONFIG_INVALID: 'a configuration value (flag, environment variable or config file) failed validation',
  BACKEND_UNKNOWN: 'an unknown backend name was requested',
  BACKEND_UNAVAILABLE: 'the requested backend package is not installed or failed to load',
  GPU_VULKAN_LOADER_MISSING: 'webgpu found no GPU adapter because the Vulkan loader (libvulkan.so.1) is missing',
  GPU_NO_VULKAN_DRIVER: 'webgpu found no GPU adapter because no Vulkan driver (ICD manifest) is installed',
  GPU_ADAPTER_REJECTED: 'Vulkan drivers are installed but Dawn accepted none of them as a WebGPU adapter',
  GPU_SOFTWARE_ADAPTER: 'the only WebGPU adapter is a software rasteriser (llvmpipe, SwiftShader), which auto never picks',
  // data
  IDX_CORRUPT: 'an IDX file has a bad magic number, header, or length',
  IDX_MISMATCH: 'image and label files disagree (count or shape)',
  DATA_NOT_FOUND: 'a data file is missing',
  // models and checkpoints
  MODEL_UNKNOWN: 'an unknown model name was requested',
  LAYER_UNKNOWN: 'a layer name does not exist in the model',
  CHECKPOINT_INVALID: 'a checkpoint directory is missing files or is inconsistent',
  // training numerics
  NON_FINITE_GRADIENT: 'a gradient or loss became NaN or infinite',
  GRADIENT_ANOMALY: 'a rank\'s gradient norm is far outside the other ranks\' or its loss is not finite (--on-anomaly fail)',
  // distributed protocol
  FRAME_MALFORMED: 'a network frame could not be decoded or failed validation',
  FRAME_STALE: 'a network frame belongs to an older generation or step',
  FRAME_DUPLICATE: 'a network frame arrived twice',
  FRAME_UNEXPECTED: 'a well-formed frame arrived where the protocol does not allow it',
  HANDSHAKE_MISMATCH: 'a worker and the coordinator disagree on protocol, model, or parameter shapes, or the ranks of a ring on --compress',
  PEER_TIMEOUT: 'a peer did not answer before its deadline',
  PEER_LOST: 'a peer left the run',
  PEER_UNREACHABLE: 'a ring inbox cannot be connected to at the address its worker advertised (wrong interface, loopback across hosts, a firewall)',
  PORT_RANGE_EXHAUSTED: 'every port of the ring port range (--ring-ports) is in use',
  REPLICA_DIVERGED: 'worker replicas no longer hold identical weights',
  RUN_INTERRUPTED: 'the run was stopped by SIGINT or SIGTERM at a step boundary, after writing a resumable checkpoint',
  RUN_FINISHED: 'a coordinator that would continue a run found it finished (eval.json): it does not train over it again',
  STEP_ABORTED: 'a queued step order was dropped because an earlier step of the same generation failed',
  GROUP_CLOSED: 'the coordinator closed the worker group while a request was pending',
  ALLREDUCE_BUSY: 'allReduce was called while an earlier all-reduce on the same ring was still running',
  STEP_OUT_OF_ORDER: 'an all-reduce step number is not an integer above the previous step on the same ring',
  // transport security
  KEYS_INVALID: 'a key directory is missing a key file, holds a malformed key, or a secret key file is readable by others',
  TRANSPORT_INSECURE: 'no keys were given for a non-loopback address: run mnist-ddp keygen and pass --keys, or pass --insecure',
  AUTH_REFUSED: 'the peer refused this process\'s CURVE handshake (its key is not on the allow-list, or the keys do not match)',
  INVARIANT_VIOLATED: 'an internal consistency check failed: a bug in mnist-ddp, please report it',
  // serving
  BAD_REQUEST: 'an HTTP request body is malformed',
  PAYLOAD_TOO_LARGE: 'an HTTP request body is too large',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class MnistDdpError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MnistDdpError';
    this.code = code;
    this.details = Object.freeze({ ...details });
  }

  toJSON(): { code: ErrorCode; message: string; details: Readonly<Record<string, unknown>> } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

export function isErrorCode(code: string): code is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ERROR_CODES, code);
}

export function isMnistDdpError(err: unknown, code?: ErrorCode): err is MnistDdpError {
  return err instanceof MnistDdpError && (code === undefined || err.code === code);
}
