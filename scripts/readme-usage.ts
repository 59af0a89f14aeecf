import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

/**
 * The CLI reference is the shipped CLI's `--help` output, which shows the config schemas' defaults, so the docs
 * cannot drift from config.ts: docs/CLI.md holds the program's and every command's help; README.md's usage section,
 * between USAGE_BEGIN and USAGE_END, holds the program's. `npm run readme:usage` builds dist/ and
 * rewrites both; test/e2e/readme.test.ts fails when either is stale.
 */
export const USAGE_BEGIN = '<!-- usage:begin -->';
export const USAGE_END = '<!-- usage:end -->';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const README_PATH = resolve(ROOT, 'README.md');
export const CLI_REFERENCE_PATH = resolve(ROOT, 'docs/CLI.md');
/** The commands whose help the README shows; docs/CLI.md has them all. */
export const README_COMMANDS: readonly (readonly string[])[] = [[]];
const BIN = resolve(ROOT, 'bin/mnist-ddp.js');

/** `mnist-ddp <args> --help` from bin/ (dist/). stdout is a pipe, not a terminal, so commander wraps at 80 columns. */
export async function cliHelp(args: readonly string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(process.execPath, [BIN, ...args, '--help'], { encoding: 'utf8' });
  return stdout;
}

/** The subcommands a help text lists under "Commands:", in its order, without commander's own `help`. */
function subcommandsIn(help: string): string[] {
  const list = help.split('\n\nCommands:\n')[1]?.split('\n\n')[0] ?? '';
  return [...list.matchAll(/^ {2}(\S+)/gm)].map((m) => m[1]!).filter((name) => name !== 'help');
}

/** The program (`[]`) and every command path under it, depth first, each with its help text. */
export async function helpTree(helpOf: (args: readonly string[]) => Promise<string> = cliHelp, path: readonly string[] = []): Promise<{ path: string[]; help: string }[]> {
  const help = await helpOf(path);
  const children = await Promise.all(subcommandsIn(help).map((name) => helpTree(helpOf, [...path, name])));
  return [{ path: [...path], help }, ...children.flat()];
}

const GENERATED = '<!-- Generated from `mnist-ddp … --help` by `npm run readme:usage`; edit src/cli.ts and src/shared/core/config.ts instead. -->';

function helpBlocks(tree: readonly { path: string[]; help: string }[]): string {
  return tree.map(({ path, help }) => `### \`${['mnist-ddp', ...path].join(' ')}\`\n\n\`\`\`text\n${help.trimEnd()}\n\`\`\`\n`).join('\n');
}

/** The text between the README's markers: the help of README_COMMANDS, then a pointer to the full reference. */
export async function usageSection(helpOf: (args: readonly string[]) => Promise<string> = cliHelp): Promise<string> {
  const tree = await Promise.all(README_COMMANDS.map(async (path) => ({ path: [...path], help: await helpOf(path) })));
  return ['', GENERATED, '', helpBlocks(tree), 'Every other command\'s `--help`, generated the same way: [docs/CLI.md](docs/CLI.md).', ''].join('\n');
}

/** docs/CLI.md: the program's and every command's help, depth first. */
export async function cliReference(helpOf?: (args: readonly string[]) => Promise<string>): Promise<string> {
  return ['# mnist-ddp command-line reference', '', GENERATED, '', helpBlocks(await helpTree(helpOf))].join('\n');
}

function markers(readme: string): [number, number] {
  const begin = readme.indexOf(USAGE_BEGIN);
  const end = readme.indexOf(USAGE_END);
  if (begin < 0 || end < begin) throw new Error(`README.md needs ${USAGE_BEGIN} … ${USAGE_END} around its usage section`);
  return [begin + USAGE_BEGIN.length, end];
}

export function usageIn(readme: string): string {
  const [from, to] = markers(readme);
  return readme.slice(from, to);
}

export function withUsage(readme: string, section: string): string {
  const [from, to] = markers(readme);
  return readme.slice(0, from) + section + readme.slice(to);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const readme = readFileSync(README_PATH, 'utf8');
  const updated = withUsage(readme, await usageSection());
  writeFileSync(README_PATH, updated);
  const reference = await cliReference();
  const stale = !existsSync(CLI_REFERENCE_PATH) || readFileSync(CLI_REFERENCE_PATH, 'utf8') !== reference;
  mkdirSync(dirname(CLI_REFERENCE_PATH), { recursive: true });
  writeFileSync(CLI_REFERENCE_PATH, reference);
  process.stdout.write(`README.md usage section ${updated === readme ? 'is up to date' : 'regenerated'}; docs/CLI.md ${stale ? 'regenerated' : 'is up to date'}\n`);
}
