import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, describe, expect, it } from 'vitest';
import { runDataCommand, type DataReport } from '../../src/commands/data.js';
import { dataConfigSchema } from '../../src/shared/core/config.js';

const dir = mkdtempSync(join(tmpdir(), 'mnist-ddp-datacmd-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('runDataCommand', () => {
  it('prints an aligned table and writes a 10×10 PNG grid of test digits', async () => {
    const out = join(dir, 'nested', 'samples.png');
    let printed = '';
    await runDataCommand(dataConfigSchema.parse({ out }), { stdout: (s) => (printed += s) });
    const lines = printed.trimEnd().split('\n');
    expect(lines[1]).toMatch(/^split\s+count\s+0\s+1/);
    expect(lines[2]).toMatch(/^train\s+60000\s+5923\s+6742\s+5958\s+6131\s+5842\s+5421\s+5918\s+6265\s+5851\s+5949\s+0\.1307\s+0\.3081$/);
    expect(lines[3]).toMatch(/^test\s+10000\s+980\s+1135\s+1032\s+1010\s+982\s+892\s+958\s+1028\s+974\s+1009\s+0\.1325\s+0\.3105$/);
    expect(lines[1]!.length).toBe(lines[2]!.length);
    expect(lines[2]!.length).toBe(lines[3]!.length);

    const png = PNG.sync.read(readFileSync(out));
    expect([png.width, png.height]).toEqual([280, 280]);
    // Row 1 holds ones: some ink in the first cell; the top-left corner of every cell is background.
    let ink = 0;
    for (let y = 28; y < 56; y++) for (let x = 0; x < 28; x++) ink = Math.max(ink, png.data[(y * 280 + x) * 4]!);
    expect(ink).toBeGreaterThan(200);
    expect(png.data[0]).toBe(0);
  });

  it('prints one JSON line with --json', async () => {
    const out = join(dir, 'samples.png');
    let printed = '';
    const report = await runDataCommand(dataConfigSchema.parse({ out, json: true }), { stdout: (s) => (printed += s) });
    expect(printed.endsWith('\n')).toBe(true);
    expect(printed.trimEnd().includes('\n')).toBe(false);
    const parsed = JSON.parse(printed) as DataReport;
    expect(parsed).toEqual(report);
    expect(parsed.train.classCounts).toEqual([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
    expect(parsed.test.count).toBe(10000);
    expect(parsed.train.pixelMean).toBeCloseTo(0.1307, 4);
    expect(parsed.train.pixelStd).toBeCloseTo(0.3081, 4);
    expect(parsed.samples).toEqual({ file: out, width: 280, height: 280 });
  });
});
