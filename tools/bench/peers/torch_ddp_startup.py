#!/usr/bin/env python3
"""PyTorch DDP start-up: N fresh worker processes (as torchrun starts them) to the first training step.

Usage: torch_ddp_startup.py --workers N --data DIR [--hidden 128] [--batch 64] [--lr 0.1]
Each worker imports torch, joins a gloo process group, reads the IDX folder, builds the MLP under
DDP and takes one step (forward, backward with its all-reduce, SGD). Prints one JSON line with
`first_step_ms`: the wall clock (ms since the epoch) when every rank has finished its first step,
for the caller to subtract its own start time from.
"""
import argparse, gzip, json, os, socket, struct, subprocess, sys, time


def read_idx(path):
    import numpy as np
    with (gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')) as f:
        magic = f.read(4)
        dims = struct.unpack('>' + 'I' * magic[3], f.read(4 * magic[3]))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)


def worker(a):
    import numpy as np
    import torch, torch.nn as nn, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=a.rank, world_size=a.workers)
    x = torch.from_numpy(read_idx(os.path.join(a.data, 'train-images-idx3-ubyte')).reshape(-1, 784).astype(np.float32) / 255)
    y = torch.from_numpy(read_idx(os.path.join(a.data, 'train-labels-idx1-ubyte')).astype(np.int64))
    torch.manual_seed(1)
    sizes = [784] + [int(h) for h in a.hidden.split(',') if h] + [10]
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    model = DDP(nn.Sequential(*layers))
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9)
    idx = torch.randperm(len(y))[a.rank * a.batch:(a.rank + 1) * a.batch]
    opt.zero_grad()
    nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
    opt.step()
    dist.barrier()
    if a.rank == 0:
        print(json.dumps({'first_step_ms': time.time() * 1000}), flush=True)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--workers', type=int, required=True)
    ap.add_argument('--data', required=True)
    ap.add_argument('--hidden', default='128')
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--lr', type=float, default=0.1)
    ap.add_argument('--rank', type=int, default=-1)
    a = ap.parse_args()
    if a.rank >= 0:
        return worker(a)
    # The launcher, as torchrun is: pick a port, start N interpreters, wait for them.
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = {**os.environ, 'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(port)}
    procs = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], '--rank', str(r)], env=env) for r in range(a.workers)]
    sys.exit(max(p.wait() for p in procs))


if __name__ == '__main__':
    main()
