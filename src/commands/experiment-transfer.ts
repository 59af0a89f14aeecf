import { join } from 'node:path';
import { trainConfigSchema, type TransferConfig } from '../shared/core/config.js';
import { componentLogger } from '../shared/core/log.js';
import { defaultRunDir, runTrain, type Io } from '../coordinator/run.js';

export interface TransferArm {
  name: 'pretrain' | 'frozen' | 'scratch' | 'full';
  description: string;
  testAccuracy: number;
  macroF1: number;
  wallSeconds: number;
  samplesPerSec: number;
  runDir: string;
}

/**
 * The classic MNIST transfer study, end to end:
 *   pretrain  `cnn` on digits 0-4 (all labels, augmented by default);
 *   frozen    5-9 with 10 % of the labels: convolutional layers frozen, new head;
 *   scratch   the same model and labels from random initialisation;
 *   full      5-9, nothing frozen, new head, learning rate 10× lower.
 * Test accuracy is measured on the 5-9 (or 0-4) test digits. Every arm is a real training run (same code as
 * `train`/`finetune`, with --workers N when given) writing its own run directory.
 */
export async function runTransferExperiment(o: TransferConfig, io: Io): Promise<TransferArm[]> {
  const log = componentLogger('experiment');
  const base = o.runDir ?? defaultRunDir('transfer');
  const quiet: Io = { stdout: () => {} };
  const arms: TransferArm[] = [];
  const common = { backend: o.backend, seed: o.seed, workers: o.workers, json: true, report: false };
  const run = async (name: TransferArm['name'], description: string, settings: Record<string, unknown>): Promise<TransferArm> => {
    const config = Object.freeze(trainConfigSchema.parse({ ...common, ...settings, runDir: join(base, name) }));
    log.info({ arm: name }, `arm ${name}: ${description}`);
    const summary = await runTrain(config, quiet);
    const arm: TransferArm = {
      name, description, testAccuracy: summary.testAccuracy, macroF1: summary.macroF1, wallSeconds: summary.wallSeconds,
      samplesPerSec: summary.samplesPerSec, runDir: summary.runDir,
    };
    arms.push(arm);
    if (!o.json) io.stdout(`${name.padEnd(9)} ${(arm.testAccuracy * 100).toFixed(2).padStart(6)}%  ${arm.wallSeconds.toFixed(1).padStart(7)} s  ${description}`);
    return arm;
  };
  if (!o.json) io.stdout(`${'arm'.padEnd(9)} ${'test acc'.padStart(7)}  ${'wall'.padStart(9)}  what`);
  const pretrain = await run('pretrain', `cnn on digits 0-4, all labels${o.pretrainAugment ? ', augmented' : ''} (test: 0-4)`, { model: 'cnn', classes: '0-4', epochs: o.pretrainEpochs, augment: o.pretrainAugment, lr: o.lr });
  const fewLabels = { classes: '5-9', labelFraction: o.labelFraction, epochs: o.finetuneEpochs, warmupSteps: 0 };
  const from = join(pretrain.runDir, 'checkpoint');
  await run('frozen', `5-9, ${o.labelFraction * 100}% labels, conv layers frozen, new head`, { ...fewLabels, from, freezeUntil: 'pool2', newHead: true, lr: o.lr });
  await run('scratch', `5-9, ${o.labelFraction * 100}% labels, from random initialisation`, { ...fewLabels, model: 'cnn', lr: o.lr });
  await run('full', `5-9, ${o.labelFraction * 100}% labels, nothing frozen, new head, lr ${o.lr / 10}`, { ...fewLabels, from, newHead: true, lr: o.lr / 10 });
  const byName = Object.fromEntries(arms.map((a) => [a.name, a]));
  if (o.json) {
    io.stdout(JSON.stringify({ arms }));
  } else {
    const frozen = byName.frozen!;
    const scratch = byName.scratch!;
    io.stdout(`\nfrozen features ${frozen.testAccuracy > scratch.testAccuracy ? 'beat' : 'did NOT beat'} training from scratch on the same labels (${(frozen.testAccuracy * 100).toFixed(2)}% vs ${(scratch.testAccuracy * 100).toFixed(2)}%); runs in ${base}`);
  }
  return arms;
}
