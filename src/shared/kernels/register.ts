import { FusedBatchNorm, getGradient, getKernel, registerGradient, registerKernel, unregisterKernel, type KernelConfig } from '@tensorflow/tfjs';
import { batchNormGradConfig, batchNormGradKernelConfig } from './batch-norm-grad.js';
import { batchNormTrainKernelConfigs } from './batch-norm-train.js';
import { conv2dBackpropFilterConfig } from './conv2d-backprop-filter.js';
import { conv2dBackpropInputConfig } from './conv2d-backprop-input.js';
import { conv2dGradConfig } from './conv2d-grad.js';
import { convBatchNormKernelConfigs } from './conv-batch-norm.js';
import { convReluPoolKernelConfig, convReluPoolGradKernelConfig } from './conv-relu-pool.js';
import { dropoutKernelConfig } from './dropout.js';
import { FAST_PATHS } from './fast-paths.js';
import { filterGradByTapsKernel, webgpuFilterGrad } from './filter-grad-by-taps.js';
import { maxPoolGradConfig } from './max-pool-grad.js';
import { meanGradConfig } from './mean-grad.js';
import { reluGradConfig, reluGradKernelConfig } from './relu-grad.js';
import { softmaxCrossEntropyKernelConfigs } from './softmax-cross-entropy.js';

/** The training kernels mnist-ddp adds to, or replaces in, tfjs-backend-wasm. */
const WASM_TRAINING_KERNELS: readonly KernelConfig[] = [
  conv2dBackpropFilterConfig, conv2dBackpropInputConfig, maxPoolGradConfig, reluGradKernelConfig, batchNormGradKernelConfig,
  convReluPoolKernelConfig, convReluPoolGradKernelConfig, ...batchNormTrainKernelConfigs, ...convBatchNormKernelConfigs, dropoutKernelConfig, ...softmaxCrossEntropyKernelConfigs,
];

let registered = false;

function replaceKernel(config: KernelConfig): void {
  if (getKernel(config.kernelName, config.backendName)) unregisterKernel(config.kernelName, config.backendName);
  registerKernel(config);
}

/** Idempotent. Call once the wasm backend is registered, before the first training step. */
export function registerWasmTrainingKernels(): void {
  if (registered) return;
  for (const config of WASM_TRAINING_KERNELS) replaceKernel(config);
  for (const { kernelName, wrap } of FAST_PATHS) {
    const stock = getKernel(kernelName, 'wasm');
    if (!stock) throw new Error(`mnist-ddp wasm kernels: tfjs-backend-wasm has no ${kernelName} kernel to wrap`);
    replaceKernel({ ...stock, kernelFunc: wrap(stock.kernelFunc) });
  }
  registerGradient(conv2dGradConfig);
  registerGradient(reluGradConfig);
  registerGradient(batchNormGradConfig(getGradient(FusedBatchNorm)));
  registerGradient(meanGradConfig);
  registered = true;
}

let webgpuRegistered = false;

/**
 * Idempotent. Call once the webgpu backend is registered: Conv2DBackpropFilter by taps (filter-grad-by-taps.ts) in
 * front of tfjs-backend-webgpu's, for Conv2D's gradient and the fused convolutions' alike.
 */
export function registerWebgpuTrainingKernels(): void {
  if (webgpuRegistered || webgpuFilterGrad() === 'stock') return;
  const stock = getKernel('Conv2DBackpropFilter', 'webgpu');
  replaceKernel(filterGradByTapsKernel('webgpu', stock?.kernelFunc));
  webgpuRegistered = true;
}
