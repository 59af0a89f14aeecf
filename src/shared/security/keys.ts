import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as zmq from 'zeromq';
import { MnistDdpError } from '../core/errors.js';

/** A CURVE keypair as ZeroMQ takes it: two Z85 strings of 40 characters (32 bytes each). */
export interface CurveKeyPair {
  readonly publicKey: string;
  readonly secretKey: string;
}

/**
 * The files of a cluster key directory (`mnist-ddp keygen --out DIR`). The coordinator needs coordinator.key,
 * coordinator.pub and allowed/; a worker needs worker.key, worker.pub and coordinator.pub — copy only those to worker
 * machines. allowed/ holds one public key per file (*.pub): the clients the coordinator admits. Add a machine's own
 * worker.pub there to give it a key of its own; delete a file to revoke it.
 */
export const KEY_FILES = {
  coordinatorSecret: 'coordinator.key',
  coordinatorPublic: 'coordinator.pub',
  workerSecret: 'worker.key',
  workerPublic: 'worker.pub',
  allowed: 'allowed',
} as const;

const Z85_ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';
const Z85_KEY = /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/;

export function isZ85Key(text: string): boolean {
  return Z85_KEY.test(text);
}

/** The 32 raw bytes of a 40-character Z85 key (ZAP hands the handler raw bytes). */
export function z85Decode(text: string): Buffer {
  if (!isZ85Key(text)) throw new MnistDdpError('KEYS_INVALID', `not a Z85 CURVE key (40 characters): ${JSON.stringify(text.slice(0, 48))}`, {});
  const out = Buffer.alloc(32);
  for (let i = 0; i < 40; i += 5) {
    let value = 0;
    for (let j = 0; j < 5; j++) value = value * 85 + Z85_ALPHABET.indexOf(text[i + j]!);
    out.writeUInt32BE(value >>> 0, (i / 5) * 4);
  }
  return out;
}

export function z85Encode(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 4) {
    let value = ((bytes[i]! << 24) >>> 0) + (bytes[i + 1]! << 16) + (bytes[i + 2]! << 8) + bytes[i + 3]!;
    const block: string[] = [];
    for (let j = 0; j < 5; j++) {
      block.unshift(Z85_ALPHABET[value % 85]!);
      value = Math.floor(value / 85);
    }
    out += block.join('');
  }
  return out;
}

export function newKeyPair(): CurveKeyPair {
  const { publicKey, secretKey } = zmq.curveKeyPair();
  return { publicKey, secretKey };
}

/** The key in a key file: its one line that is not empty and not a `#` comment. */
function readKey(dir: string, file: string, secret: boolean): string {
  const path = join(dir, file);
  if (!existsSync(path)) throw new MnistDdpError('KEYS_INVALID', `key directory ${dir} has no ${file}; create one with 'mnist-ddp keygen --out ${dir}'`, { path });
  if (secret && process.platform !== 'win32' && (statSync(path).mode & 0o077) !== 0) {
    // As ssh refuses a private key others can read: a leaked secret key lets anyone join or impersonate.
    throw new MnistDdpError('KEYS_INVALID', `secret key ${path} is readable by group or others; run 'chmod 600 ${path}'`, { path });
  }
  const lines = readFileSync(path, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const key = lines[0];
  if (lines.length !== 1 || key === undefined || !isZ85Key(key)) throw new MnistDdpError('KEYS_INVALID', `${path} must hold one Z85 CURVE key (40 characters)`, { path });
  return key;
}

export interface CoordinatorKeys {
  readonly server: CurveKeyPair;
  /** Raw public keys of the admitted clients, with the file each came from. */
  readonly allowed: ReadonlyMap<string, Buffer>;
}

export interface WorkerKeys {
  readonly client: CurveKeyPair;
  /** The coordinator's public key: a worker talks only to the coordinator that holds its secret. */
  readonly serverKey: string;
}

export function loadCoordinatorKeys(dir: string): CoordinatorKeys {
  const server = { secretKey: readKey(dir, KEY_FILES.coordinatorSecret, true), publicKey: readKey(dir, KEY_FILES.coordinatorPublic, false) };
  const allowedDir = join(dir, KEY_FILES.allowed);
  const files = existsSync(allowedDir) ? readdirSync(allowedDir).filter((f) => f.endsWith('.pub')).sort() : [];
  if (files.length === 0) throw new MnistDdpError('KEYS_INVALID', `${allowedDir} holds no *.pub files: no worker could join; copy each worker's public key there`, { path: allowedDir });
  const allowed = new Map(files.map((f) => [f, z85Decode(readKey(allowedDir, f, false))]));
  return { server, allowed };
}

export function loadWorkerKeys(dir: string): WorkerKeys {
  return {
    client: { secretKey: readKey(dir, KEY_FILES.workerSecret, true), publicKey: readKey(dir, KEY_FILES.workerPublic, false) },
    serverKey: readKey(dir, KEY_FILES.coordinatorPublic, false),
  };
}

/**
 * Writes a new cluster key directory: the coordinator's keypair, one worker keypair, and allowed/worker.pub. The
 * directory is 0700 and secret keys 0600. Refuses to overwrite existing keys (a new coordinator key would lock out
 * every deployed worker). Returns the files written.
 */
export function writeKeyDir(dir: string): string[] {
  for (const f of [KEY_FILES.coordinatorSecret, KEY_FILES.workerSecret]) {
    if (existsSync(join(dir, f))) throw new MnistDdpError('KEYS_INVALID', `${join(dir, f)} already exists; remove the old keys first or choose another --out`, { path: join(dir, f) });
  }
  mkdirSync(join(dir, KEY_FILES.allowed), { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const coordinator = newKeyPair();
  const worker = newKeyPair();
  const files: [string, string, number][] = [
    [KEY_FILES.coordinatorSecret, coordinator.secretKey, 0o600],
    [KEY_FILES.coordinatorPublic, coordinator.publicKey, 0o644],
    [KEY_FILES.workerSecret, worker.secretKey, 0o600],
    [KEY_FILES.workerPublic, worker.publicKey, 0o644],
    [join(KEY_FILES.allowed, 'worker.pub'), worker.publicKey, 0o644],
  ];
  for (const [file, key, mode] of files) {
    const secret = mode === 0o600;
    writeFileSync(join(dir, file), `# mnist-ddp CURVE ${secret ? 'SECRET' : 'public'} key (Z85)${secret ? ': never copy it off the machine that needs it' : ''}\n${key}\n`, { mode });
    chmodSync(join(dir, file), mode);
  }
  return files.map(([file]) => join(dir, file));
}
