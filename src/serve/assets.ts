import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/**
 * The page's static files live in src/serve/ (they are not TypeScript, so `tsc` does not copy them to dist/).
 * From src/commands or dist/commands we look in ../serve first, then ../../src/serve.
 */
function serveDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [here, join(here, '..', 'serve'), join(here, '..', '..', 'src', 'serve'), join(here, '..', '..', '..', 'src', 'serve')];
  const found = candidates.find((dir) => existsSync(join(dir, 'page.html')) && existsSync(join(dir, 'preprocess.js')));
  if (!found) throw new Error(`serve assets (page.html, app.js, preprocess.js) not found; looked in ${candidates.join(', ')}`);
  return found;
}

export interface StaticAsset {
  body: Buffer;
  contentType: string;
}

/** URL path → file, read once at start-up. tf.min.js is the browser bundle of the installed @tensorflow/tfjs. */
export function loadStaticAssets(): Map<string, StaticAsset> {
  const dir = serveDir();
  const tfBundle = join(dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs/package.json')), 'dist', 'tf.min.js');
  const js = 'text/javascript; charset=utf-8';
  return new Map<string, StaticAsset>([
    ['/', { body: readFileSync(join(dir, 'page.html')), contentType: 'text/html; charset=utf-8' }],
    ['/app.js', { body: readFileSync(join(dir, 'app.js')), contentType: js }],
    ['/preprocess.js', { body: readFileSync(join(dir, 'preprocess.js')), contentType: js }],
    ['/tf.min.js', { body: readFileSync(tfBundle), contentType: js }],
  ]);
}

/** The functions of src/serve/preprocess.js that the server uses (see that file for the algorithm). */
export interface Preprocess {
  preprocessRgba(rgba: ArrayLike<number>, width: number, height: number): Float32Array;
  normalise(pixels: ArrayLike<number>): Float32Array;
}

function isPreprocess(mod: unknown): mod is Preprocess {
  const m = mod as Record<string, unknown> | null;
  return typeof m === 'object' && m !== null && typeof m.preprocessRgba === 'function' && typeof m.normalise === 'function';
}

/** Imports the same preprocess.js file the page loads, so server and page cannot drift apart. */
export async function loadPreprocess(): Promise<Preprocess> {
  const mod: unknown = await import(pathToFileURL(join(serveDir(), 'preprocess.js')).href);
  if (!isPreprocess(mod)) throw new Error('src/serve/preprocess.js does not export preprocessRgba and normalise');
  return mod;
}
