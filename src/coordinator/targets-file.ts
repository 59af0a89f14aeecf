import { mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { MnistDdpError } from '../shared/core/errors.js';

export interface ScrapeTarget {
  host: string;
  port: number;
  /** Prometheus target labels, e.g. `{ role: 'worker', rank: '1' }`. Names must match [a-zA-Z_][a-zA-Z0-9_]*. */
  labels: Readonly<Record<string, string>>;
}

/** One entry of Prometheus' file_sd JSON format. */
export interface FileSdGroup {
  targets: string[];
  labels: Record<string, string>;
}

const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export function toFileSdGroups(targets: readonly ScrapeTarget[]): FileSdGroup[] {
  return targets.map((target) => {
    if (!Number.isInteger(target.port) || target.port < 1 || target.port > 65535) {
      throw new MnistDdpError('CONFIG_INVALID', `scrape target ${target.host}:${target.port} has an invalid port`, {
        target,
      });
    }
    for (const name of Object.keys(target.labels)) {
      if (!LABEL_NAME.test(name) || name.startsWith('__')) {
        throw new MnistDdpError('CONFIG_INVALID', `scrape target label name ${JSON.stringify(name)} is not allowed`, {
          label: name,
        });
      }
    }
    const host = target.host.includes(':') && !target.host.startsWith('[') ? `[${target.host}]` : target.host;
    return { targets: [`${host}:${target.port}`], labels: { ...target.labels } };
  });
}

/**
 * Writes `targets` to `path` in Prometheus file_sd JSON format, atomically: Prometheus watches the file and may
 * read it at any moment, so it must only ever see a complete old or a complete new version. Temp file in the same
 * directory (rename is atomic only within one filesystem) → fsync → rename → fsync the directory so the rename
 * survives a crash. The temp name does not end in .json, so a `*.json` glob never picks it up.
 */
export async function writeScrapeTargets(path: string, targets: readonly ScrapeTarget[]): Promise<void> {
  const body = `${JSON.stringify(toFileSdGroups(targets), null, 2)}\n`;
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const temp = join(dir, `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
  try {
    const file = await open(temp, 'w', 0o644);
    try {
      await file.writeFile(body, 'utf8');
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
  const dirHandle = await open(dir, 'r');
  try {
    await dirHandle.sync();
  } finally {
    await dirHandle.close();
  }
}
