import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';

// The README's usage section must cover every command and flag the CLI has (issue #3: "Keep it true").
const README = readFileSync(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');
const COMMANDS = [['train'], ['finetune'], ['eval'], ['bench'], ['data'], ['coordinator'], ['worker'], ['export'], ['serve'], ['report'], ['experiment', 'transfer']];

describe('README', () => {
  it('has a Quick start with exactly the two commands: install-and-run and test', () => {
    const quick = README.slice(README.indexOf('## Quick start'), README.indexOf('\n## ', README.indexOf('## Quick start') + 5));
    const commands = [...quick.matchAll(/```sh\n([\s\S]*?)```/g)].flatMap((m) => m[1]!.split('\n').filter((l) => l.trim() && !l.trim().startsWith('#')));
    expect(commands.map((c) => c.replace(/\s+#.*$/, '').trim())).toEqual(['npm install && npm start', 'npm test']);
  });

  it.each(COMMANDS.map((c) => [c.join(' '), c] as const))('documents every flag of `mnist-ddp %s`', async (_name, args) => {
    const help = await runCli([...args, '--help']);
    const flags = [...help.stdout.matchAll(/(--[a-z][a-z-]*)/g)].map((m) => m[1]!).filter((f) => f !== '--help');
    expect(flags.length).toBeGreaterThan(0);
    expect(README).toContain(`mnist-ddp ${args.join(' ')}`);
    for (const flag of new Set(flags)) expect(README, `${args.join(' ')} ${flag}`).toContain(flag);
  });
});
