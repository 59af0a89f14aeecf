import cliProgress from 'cli-progress';
import type { Logger } from '../shared/core/log.js';
import type { EpochEvent, StepEvent } from './driver.js';

/**
 * Progress for a whole run: a bar with samples/s, loss and ETA on a TTY; otherwise plain log lines (about every 5 %
 * of an epoch), so pm2 and CI logs stay readable.
 */
export interface Progress {
  step(e: StepEvent): void;
  epoch(e: EpochEvent): void;
  stop(): void;
}

export function createProgress(opts: { tty: boolean; totalSamples: number; log: Logger }): Progress {
  const rate = { value: 0 };
  const smooth = (v: number): number => (rate.value = rate.value === 0 ? v : 0.9 * rate.value + 0.1 * v);
  if (opts.tty) {
    const bar = new cliProgress.SingleBar({
      format: 'epoch {epoch} |{bar}| {percentage}% | {samplesPerSec} samples/s | loss {loss} | lr {lr} | workers {workers} | ETA {eta_formatted}',
      hideCursor: true, stream: process.stderr, etaBuffer: 50,
    }, cliProgress.Presets.shades_classic);
    bar.start(opts.totalSamples, 0, { epoch: 1, samplesPerSec: 0, loss: '-', lr: '-', workers: 1 });
    return {
      step: (e) => bar.update(Math.round(e.progress * opts.totalSamples), {
        epoch: e.epoch + 1, samplesPerSec: Math.round(smooth(e.samplesPerSec)), loss: e.loss.toFixed(4), lr: e.lr.toExponential(2), workers: e.worldSize,
      }),
      epoch: (e) => {
        bar.stop();
        process.stderr.write(`epoch ${e.epoch + 1}: ${Math.round(e.samplesPerSec)} samples/s${e.validation ? `, validation accuracy ${(e.validation.accuracy * 100).toFixed(2)}%` : ''}\n`);
        bar.start(opts.totalSamples, bar.getProgress() * opts.totalSamples);
      },
      stop: () => bar.stop(),
    };
  }
  let lastLogged = -1;
  return {
    step: (e) => {
      smooth(e.samplesPerSec);
      const bucket = Math.floor((e.cursor / e.epochSize) * 20);
      if (bucket !== lastLogged) {
        lastLogged = bucket;
        opts.log.info({ epoch: e.epoch + 1, step: e.step, loss: +e.loss.toFixed(4), lr: e.lr, samplesPerSec: Math.round(rate.value), workers: e.worldSize, progress: +e.progress.toFixed(3) }, 'training');
      }
    },
    epoch: (e) => {
      lastLogged = -1;
      opts.log.info({ epoch: e.epoch + 1, samplesPerSec: Math.round(e.samplesPerSec), validationAccuracy: e.validation?.accuracy, validationLoss: e.validation?.loss }, 'epoch done');
    },
    stop: () => {},
  };
}
