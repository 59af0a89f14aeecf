import { resolve } from 'node:path';
import type { KeygenConfig } from '../shared/core/config.js';
import type { Io } from '../shared/core/io.js';
import { KEY_FILES, writeKeyDir } from '../shared/security/keys.js';

/**
 * `mnist-ddp keygen --out DIR`: a new cluster key directory (shared/security/keys.ts) and how to deploy it. Keys
 * are read from files only (--keys DIR / MNIST_DDP_KEYS), never from a command line, where every user sees them.
 */
export function runKeygen(config: KeygenConfig, io: Io): void {
  const files = writeKeyDir(config.out);
  const dir = resolve(config.out);
  io.stdout([
    `wrote ${files.length} key files to ${dir}:`,
    ...files.map((f) => `  ${f}`),
    '',
    `coordinator machine: the whole directory;  mnist-ddp coordinator --keys ${dir} --bind tcp://0.0.0.0:5555 …`,
    `worker machines: only ${KEY_FILES.workerSecret}, ${KEY_FILES.workerPublic} and ${KEY_FILES.coordinatorPublic} (keep ${KEY_FILES.workerSecret} mode 0600);`,
    `  mnist-ddp worker --keys DIR --coordinator tcp://COORDINATOR-HOST:5555`,
    `More worker keys: run keygen elsewhere and copy that ${KEY_FILES.workerPublic} into ${dir}/${KEY_FILES.allowed}/NAME.pub; delete a file there to revoke a key.`,
  ].join('\n'));
}
