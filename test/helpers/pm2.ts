import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const PM2_BIN = fileURLToPath(new URL('../../node_modules/pm2/bin/pm2', import.meta.url));

/** Where pm2 runs: `env.PM2_HOME` gives each test its own daemon, apart from any pm2 the machine runs. */
export interface Pm2Context {
  cwd: string;
  env: NodeJS.ProcessEnv;
}

/** Runs the pm2 CLI from node_modules and resolves with its stdout; rejects with stdout and stderr on failure. */
export function runPm2(context: Pm2Context, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [PM2_BIN, ...args], { cwd: context.cwd, env: context.env, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`pm2 ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Teardown: deletes every app and stops the daemon; ignores failures (the daemon may never have started). */
export async function stopPm2(context: Pm2Context): Promise<void> {
  await runPm2(context, 'delete', 'all').catch(() => undefined);
  await runPm2(context, 'kill').catch(() => undefined);
}
