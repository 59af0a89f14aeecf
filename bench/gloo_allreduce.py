"""PyTorch gloo all_reduce baseline: 2 processes x 1 thread, rendezvous over tcp://127.0.0.1.

    /usr/bin/python3 bench/gloo_allreduce.py "133 KiB=34826,50,400" "8 MiB=2097152,10,60"

Each argument is NAME=FLOATS,WARMUP,ITERATIONS: an all-reduce of FLOATS float32 values, WARMUP untimed iterations, then
ITERATIONS timed ones. bench/allreduce.ts passes its own SIZES table, so the ring and gloo run the same counts.
Prints one JSON line on stdout: {name: [rank 0 samples, rank 1 samples]}, milliseconds per timed iteration (each
after a barrier), in iteration order so that the caller can take the slower rank per iteration.
"""
import json
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, port: int, sizes: list, queue) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    result = {}
    for name, floats, warmup, iterations in sizes:
        t = torch.empty((floats,), dtype=torch.float32)
        samples = []
        for i in range(warmup + iterations):
            t.fill_(float(rank + 1))
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(t)
            if i >= warmup:
                samples.append((time.perf_counter() - t0) * 1000)
            # Ranks contribute 1 and 2: every element must be 3 (checked outside the timing, as the ring's is).
            if t[0].item() != 3 or t[-1].item() != 3:
                raise RuntimeError(f"{name} iteration {i}: wrong sum {t[0].item()} ... {t[-1].item()}")
        result[name] = samples
    queue.put((rank, result))
    dist.destroy_process_group()


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sizes = []
    for arg in sys.argv[1:]:
        name, spec = arg.rsplit("=", 1)
        floats, warmup, iterations = (int(v) for v in spec.split(","))
        sizes.append((name, floats, warmup, iterations))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(rank, port, sizes, queue)) for rank in range(2)]
    for p in procs:
        p.start()
    by_rank = dict(queue.get(timeout=600) for _ in procs)
    for p in procs:
        p.join()
    print(json.dumps({name: [by_rank[0][name], by_rank[1][name]] for name, *_ in sizes}))


if __name__ == "__main__":
    main()
