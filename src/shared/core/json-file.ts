import { readFileSync } from 'node:fs';
import type { z } from 'zod';
import { MnistDdpError } from './errors.js';

/**
 * Reads a JSON file written by mnist-ddp (checkpoint state, model.json, eval.json, config.json) and validates it
 * against `schema`. Bad JSON or a bad field is a CHECKPOINT_INVALID error naming the file and the first bad field;
 * `expected` says what the file should be, so the user knows what to pass instead.
 */
export function readJsonFile<T>(file: string, schema: z.ZodType<T, z.ZodTypeDef, unknown>, expected: string): T {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new MnistDdpError('CHECKPOINT_INVALID', `${file} is not valid JSON: ${(err as Error).message}; expected ${expected}`, { file });
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.join('.') || '(root)';
    throw new MnistDdpError('CHECKPOINT_INVALID', `${file}: '${field}' is missing or invalid (${issue.message}); expected ${expected}`, { file, field });
  }
  return parsed.data;
}
