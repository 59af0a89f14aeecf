import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { CLI_REFERENCE_PATH, README_PATH, cliHelp, cliReference, helpTree, usageIn, usageSection } from '../../scripts/readme-usage.js';
import {
  benchConfigSchema, coordinatorConfigSchema, dataConfigSchema, defaultOf, evalConfigSchema, exportConfigSchema, reportConfigSchema, serveConfigSchema,
  chaosConfigSchema, trainConfigSchema, transferConfigSchema, workerConfigSchema,
} from '../../src/shared/core/config.js';
import { runCli } from '../helpers/cli.js';

// The README's usage section must cover every command and flag the CLI has (issue #3: "Keep it true").
const README = readFileSync(README_PATH, 'utf8');
const CLI_REFERENCE = readFileSync(CLI_REFERENCE_PATH, 'utf8');
const COMMANDS = [['train'], ['finetune'], ['eval'], ['bench'], ['data'], ['coordinator'], ['worker'], ['keygen'], ['export'], ['serve'], ['report'], ['experiment', 'transfer'], ['chaos']];

/** The config schema each command resolves its flags with (cli.ts's configOf calls). */
const SCHEMAS: Record<string, z.ZodObject<z.ZodRawShape>> = {
  train: trainConfigSchema, finetune: trainConfigSchema, coordinator: coordinatorConfigSchema, worker: workerConfigSchema, bench: benchConfigSchema,
  eval: evalConfigSchema, export: exportConfigSchema, serve: serveConfigSchema, report: reportConfigSchema, data: dataConfigSchema,
  'experiment transfer': transferConfigSchema, chaos: chaosConfigSchema,
};

/** The options of a help text: flag → description, wrapped lines joined. */
function optionsIn(help: string): Map<string, { value: boolean; description: string }> {
  const options = new Map<string, { value: boolean; description: string }>();
  let last: { value: boolean; description: string } | undefined;
  for (const line of (help.split('\nOptions:\n')[1] ?? '').split('\n')) {
    const entry = /^ {2}(?:-\w, )?(--[a-z-]+)( <[^>]+>)?\s+(.*)$/.exec(line);
    if (entry) options.set(entry[1]!, (last = { value: entry[2] !== undefined, description: entry[3]! }));
    else if (last && /^\s{3,}\S/.test(line)) last.description += ` ${line.trim()}`;
    else last = undefined;
  }
  return options;
}

/** Every command's help, spawned once for the tests that need all of them. */
let helps: ReturnType<typeof helpTree> | undefined;
const helpOf = async (args: readonly string[]): Promise<string> => (await (helps ??= helpTree())).find(({ path }) => path.join(' ') === args.join(' '))!.help;

const keyOf = (flag: string): string => flag.slice(2).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

describe('README', () => {
  it('has a Quick start with exactly the two commands: install-and-run and test', () => {
    const quick = README.slice(README.indexOf('## Quick start'), README.indexOf('\n## ', README.indexOf('## Quick start') + 5));
    const commands = [...quick.matchAll(/```sh\n([\s\S]*?)```/g)].flatMap((m) => m[1]!.split('\n').filter((l) => l.trim() && !l.trim().startsWith('#')));
    expect(commands.map((c) => c.replace(/\s+#.*$/, '').trim())).toEqual(['npm install && npm start', 'npm test']);
  });

  it.each(COMMANDS.map((c) => [c.join(' '), c] as const))('docs/CLI.md documents every flag of `mnist-ddp %s`', async (_name, args) => {
    const help = await runCli([...args, '--help']);
    const flags = [...help.stdout.matchAll(/(--[a-z][a-z-]*)/g)].map((m) => m[1]!).filter((f) => f !== '--help');
    expect(flags.length).toBeGreaterThan(0);
    expect(CLI_REFERENCE).toContain(`mnist-ddp ${args.join(' ')}`);
    for (const flag of new Set(flags)) expect(CLI_REFERENCE, `${args.join(' ')} ${flag}`).toContain(flag);
  });

  // Issue #12: the usage section is the real --help output, defaults included, so a changed default cannot leave it stale.
  it("holds, between its usage markers, exactly the program's --help output", async () => {
    expect(usageIn(README), 'README.md usage section differs from `mnist-ddp … --help`: run `npm run readme:usage` to regenerate it').toBe(await usageSection(helpOf));
  });

  it('links docs/CLI.md, which holds exactly the --help output of the program and every command', async () => {
    expect(README).toContain('(docs/CLI.md)');
    expect(CLI_REFERENCE, 'docs/CLI.md differs from `mnist-ddp … --help`: run `npm run readme:usage` to regenerate it').toBe(await cliReference(helpOf));
  });
});

describe('--help', () => {
  it('lists the commands the tests above check', async () => {
    const leaves = (await (helps ??= helpTree())).filter(({ help }) => !help.includes('\nCommands:\n')).map(({ path }) => path.join(' '));
    expect(leaves.sort()).toEqual(COMMANDS.map((c) => c.join(' ')).sort());
  });

  // Issue #12: defaults live only in config.ts's schemas; the help shows exactly those.
  it.each(Object.entries(SCHEMAS))('`mnist-ddp %s --help` shows each value flag\'s schema default and no other', async (name, schema) => {
    const options = optionsIn(await cliHelp(name.split(' ')));
    let shown = 0;
    for (const [flag, { value, description }] of options) {
      const key = keyOf(flag);
      if (!value || !(key in schema.shape)) continue;
      const fallback = defaultOf(schema, key);
      const stated = /\(default ([^:;)][^;)]*)\)$/.exec(description)?.[1];
      if (fallback === undefined || (Array.isArray(fallback) && fallback.length === 0)) {
        expect(stated, `${name} ${flag}: ${description}`).toBeUndefined();
      } else {
        expect(stated, `${name} ${flag}: ${description}`).toBe(String(fallback));
        shown++;
      }
    }
    if (name !== 'report') expect(shown).toBeGreaterThan(0);
  });
});
