import type { BackgroundProcess } from './cli.js';

/**
 * Resolves with match number `skip` (0: the first) of `pattern` in `proc`'s output (stdout and stderr), re-checked
 * on every chunk it writes — no polling; rejects when the process exits first or after `deadlineMs`, with the
 * output's tail. Counts matches in the output's bounded tail: keep `skip` for processes that log little.
 */
export function untilOutput(proc: BackgroundProcess, pattern: RegExp, what: string, deadlineMs = 60_000, skip = 0): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    const streams = [proc.child.stdout, proc.child.stderr].filter((s) => s !== null);
    const finish = (settle: () => void): void => {
      clearTimeout(timer);
      for (const s of streams) s.off('data', check);
      proc.child.off('close', onExit);
      settle();
    };
    // Listeners run in registration order: the helper's own (which appends to output()) was added at spawn, first.
    const global = new RegExp(pattern.source, pattern.flags.includes('g') ? pattern.flags : `${pattern.flags}g`);
    const check = (): void => {
      const m = [...proc.output().matchAll(global)][skip];
      if (m) finish(() => resolve(m));
    };
    // 'close', not 'exit': the output is complete only once the pipes closed.
    const onExit = (code: number | null): void => finish(() => reject(new Error(`${proc.name} exited (${code}) before ${what}:\n${proc.output().slice(-3000)}`)));
    const timer = setTimeout(() => finish(() => reject(new Error(`timed out after ${deadlineMs} ms waiting for ${what} in ${proc.name}'s output:\n${proc.output().slice(-3000)}`))), deadlineMs);
    for (const s of streams) s.on('data', check);
    proc.child.once('close', onExit);
    check();
  });
}

/** The JSON log lines (pino) of `text` whose `msg` matches `pattern`, parsed. */
export function logLines(text: string, pattern: RegExp): Array<{ time: number; msg: string; [key: string]: unknown }> {
  const lines: Array<{ time: number; msg: string; [key: string]: unknown }> = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const record = JSON.parse(line) as { time: number; msg: string };
      if (typeof record.msg === 'string' && pattern.test(record.msg)) lines.push(record);
    } catch {
      // a line cut by the output's bounded tail
    }
  }
  return lines;
}
