#!/usr/bin/env python3
"""PyTorch baseline for `mnist-ddp bench`: the same model (`--model cnn`, the default, or `cnn-large`), batch,
optimiser and data, on real MNIST.

One process, torch.set_num_threads(1) (the figure our single WASM thread is compared with), or --ddp N processes
with gloo and 1 thread each (the figure our ZeroMQ ring is compared with). Prints one JSON line:
{"framework": "pytorch", "model": ..., "samplesPerSec": median over timed windows, "windows": [...], ...}.

--device cuda (one process; the figure `bench --backend webgpu` is compared with, scripts/gpu-host/h200.sh) keeps the
training set on the GPU, as a PyTorch user would, and synchronises the device at each window's ends so the time
covers finished work; its JSON line adds "device" and "gpu". --data-dir may hold the files raw or as .gz.
"""
import argparse, gzip, json, os, statistics, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def locate(data_dir, name):
    """`name` in data_dir, else `name.gz` (mnist-ddp's bundle ships MNIST gzip'd)."""
    raw = os.path.join(data_dir, name)
    return raw if os.path.exists(raw) or not os.path.exists(raw + '.gz') else raw + '.gz'


def load_train(data_dir):
    images = read_idx(locate(data_dir, 'train-images-idx3-ubyte'))
    labels = read_idx(locate(data_dir, 'train-labels-idx1-ubyte'))
    x = (torch.from_numpy(images.astype(np.float32) / 255.0) - 0.1307) / 0.3081
    return x.unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


class Cnn(nn.Module):
    """conv 32@3x3 relu → pool 2 → conv 64@3x3 relu → pool 2 → dense 10: 34 826 parameters, as mnist-ddp `cnn`."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.head = nn.Linear(1600, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.head(torch.flatten(x, 1))


class CnnLarge(nn.Module):
    """mnist-ddp `cnn-large` (src/shared/model/zoo.ts): 468 138 trainable parameters, as tfjs counts its trainable weights.

    Two blocks of [conv 3x3 'same' without bias → batch norm → relu] × 2 → max pool 2 → dropout 0.25 (32 then 64
    filters), then dense 128 without bias → batch norm → relu → dropout 0.4 → dense 10. Batch norm takes tfjs's
    (Keras's) defaults: momentum 0.99 on the moving statistics is PyTorch's momentum 0.01, epsilon 1e-3; its moving
    mean and variance are buffers here, non-trainable weights there, so neither side counts them. Dropout is
    elementwise, as tf.layers.dropout is. The layout is NCHW instead of NHWC: same shapes, same work.
    """

    def __init__(self):
        super().__init__()

        def conv_bn(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01), nn.ReLU()]

        self.features = nn.Sequential(
            *conv_bn(1, 32), *conv_bn(32, 32), nn.MaxPool2d(2), nn.Dropout(0.25),
            *conv_bn(32, 64), *conv_bn(64, 64), nn.MaxPool2d(2), nn.Dropout(0.25),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 128, bias=False), nn.BatchNorm1d(128, eps=1e-3, momentum=0.01), nn.ReLU(), nn.Dropout(0.4),
        )
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        return self.head(self.features(x))


# Trainable parameter counts of mnist-ddp's models (buildModel(name).trainableWeights): each PyTorch model must match.
MODELS = {'cnn': (Cnn, 34826), 'cnn-large': (CnnLarge, 468138)}


def run(rank, world, args, x, y, out_path=None):
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    model_class, param_count = MODELS[args.model]
    model = model_class()
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == param_count
    cuda = args.device == 'cuda'
    if cuda:
        model, x, y = model.cuda(), x.cuda(), y.cuda()
    if world > 1:
        import torch.distributed as dist
        dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{args.port}', rank=rank, world_size=world)
        model = nn.parallel.DistributedDataParallel(model)
    # `mnist-ddp bench` trains every model with SGD, momentum 0.9, lr 0.01, no weight decay (src/commands/bench.ts).
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(args.seed + rank)).to(x.device)
    b = args.batch_size
    cursor = [0]

    def step():
        if cursor[0] + b > perm.numel():
            cursor[0] = 0
        idx = perm[cursor[0]:cursor[0] + b]
        cursor[0] += b
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    per_window = max(1, args.steps // args.windows)
    windows = []
    for _ in range(args.windows):
        if world > 1:
            torch.distributed.barrier()
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(per_window):
            step()
        if cuda:
            torch.cuda.synchronize()
        windows.append(per_window * b * world / (time.perf_counter() - t0))
    if rank == 0:
        result = {'framework': 'pytorch', 'model': args.model, 'torch': torch.__version__, 'threads': 1, 'processes': world,
                  'batchSize': b, 'samplesPerSec': round(statistics.median(windows), 1),
                  'windows': [round(w, 1) for w in windows]}
        if cuda:
            result.update(device='cuda', gpu=torch.cuda.get_device_name())
        if out_path:
            with open(out_path, 'w') as f:
                json.dump(result, f)
        else:
            print(json.dumps(result))
    if world > 1:
        torch.distributed.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--data-dir', required=True)
    p.add_argument('--model', choices=sorted(MODELS), default='cnn', help="mnist-ddp's model of that name")
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--steps', type=int, default=100)
    p.add_argument('--warmup', type=int, default=10)
    p.add_argument('--windows', type=int, default=5)
    p.add_argument('--ddp', type=int, default=1, help='processes (gloo) ; 1 = no DDP')
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--port', type=int, default=29531)
    p.add_argument('--device', choices=['cpu', 'cuda'], default='cpu', help='cuda: one process on the first GPU')
    args = p.parse_args()
    if args.device == 'cuda' and args.ddp != 1:
        p.error('--device cuda runs one process; use --ddp 1')
    x, y = load_train(args.data_dir)
    if args.ddp == 1:
        run(0, 1, args, x, y)
        return
    import tempfile
    import torch.multiprocessing as mp
    out = os.path.join(tempfile.mkdtemp(), 'result.json')
    mp.spawn(run, args=(args.ddp, args, x, y, out), nprocs=args.ddp, join=True)
    with open(out) as f:
        print(f.read())


if __name__ == '__main__':
    sys.exit(main())
