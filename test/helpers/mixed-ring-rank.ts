/**
 * One rank of a mixed ring (issue #13) as a real process, on the backend its job names: tensors cannot move between
 * tfjs backends, so a webgpu rank and a wasm rank need processes of their own. Run with
 * `node --import tsx test/helpers/mixed-ring-rank.ts` and talk to it in JSON lines:
 *   stdin  1: MixedRankJob                      stdout: {"endpoint": …} once its ring inbox is bound
 *   stdin  2: the peers array (every rank's endpoint, by rank)
 *   stdout:   MixedRankResult, the last line
 * It loads the job's initial weights (as the coordinator's load-state does), takes its share of the step plan through
 * WorkerCore.localBatch, all-reduces its gradient contribution over a real ZeroMQ ring and reports the reduced buffer;
 * then it runs the next step through WorkerCore.runStep and reports its weights digest.
 */
import { createInterface } from 'node:readline';
import { initBackend, type BackendChoice } from '../../src/shared/core/backend.js';
import { planDataset } from '../../src/shared/data/dataset-plan.js';
import { Replica } from '../../src/shared/train/replica.js';
import { WorkerCore, type StepPlan, type StepReport } from '../../src/shared/train/worker-core.js';
import { openRingInbox, RingAllReducer } from '../../src/worker/ring/ring-allreduce.js';

export interface MixedRankJob {
  backend: BackendChoice;
  rank: number;
  worldSize: number;
  model: string;
  seed: number;
  batchSize: number;
  trainSubset: number;
  /** Initial weights (base64 of allWeights), the same for every rank. */
  weights: string;
  /** The step whose reduced gradient is reported; `plan.step + 1` (same shares, next cursor) is then trained. */
  plan: StepPlan;
}

export interface MixedRankResult {
  backend: string;
  localCount: number;
  /** Base64 of the all-reduced buffer of `plan` (gradient sums, synced buffers, loss sum, count). */
  reduced: string;
  /** WorkerCore.runStep's report of the step after `plan`, and the replica's digest after it. */
  report: StepReport;
  digest: string;
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const nextLine = async (): Promise<string> => (await lines.next()).value as string;
const job = JSON.parse(await nextLine()) as MixedRankJob;
const selection = await initBackend(job.backend);
const bytes = Buffer.from(job.weights, 'base64');
const replica = await Replica.create({ model: job.model, seed: job.seed, optimizer: { name: 'sgd', momentum: 0.9, weightDecay: 0 } });
replica.setAllWeights(new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)));
const plan = planDataset({ seed: job.seed, validationSize: 0, labelFraction: 1, trainSubset: job.trainSubset });

const inbox = await openRingInbox('tcp://127.0.0.1:*');
process.stdout.write(`${JSON.stringify({ endpoint: inbox.endpoint })}\n`);
const peers = JSON.parse(await nextLine()) as string[];
const ring = await RingAllReducer.connect({ rank: job.rank, worldSize: job.worldSize, generation: 1, peers, timeoutMs: 120_000 }, { inbox });
const core = new WorkerCore(replica, plan, { seed: job.seed, batchSize: job.batchSize, augment: false }, ring);

const batch = core.localBatch(job.plan);
const buffer = ring.allocate(replica.layout.bufferLength);
await replica.computeGradients(batch, buffer);
const localCount = batch.size;
await ring.allReduce(buffer, job.plan.step);
const reduced = Buffer.from(buffer.buffer, buffer.byteOffset, buffer.byteLength).toString('base64');
const report = await core.runStep({ ...job.plan, step: job.plan.step + 1, cursor: job.plan.cursor + job.plan.count });
await ring.close();
const result: MixedRankResult = { backend: selection.backend, localCount, reduced, report, digest: replica.digest() };
// Dawn keeps native handles: exit explicitly, once the (large, piped) result is flushed.
process.stdout.write(`\n${JSON.stringify(result)}\n`, () => process.exit(0));
