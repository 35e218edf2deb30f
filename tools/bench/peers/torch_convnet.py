#!/usr/bin/env python3
"""PyTorch peer for the convnet of models/lenet.json: one process, or DDP over Gloo with N.

Usage: torch_convnet.py --data DIR [--workers N] [--batch 64] [--epochs 5] [--lr 0.05]
Conv 16@5x5 same, ReLU, maxpool 2, conv 32@5x5 same, ReLU, maxpool 2, dense 128, ReLU, dense 10;
SGD momentum 0.9, cross-entropy; per-worker batch B, every worker one thread (as one process per
core). The data is an MNIST-format IDX folder. Prints one JSON line: samples/s over all epochs
(training only, evaluation excluded), test accuracy after each epoch, seconds to each epoch.
"""
import argparse, gzip, json, os, struct, time
import numpy as np
import torch, torch.nn as nn, torch.distributed as dist, torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP


def read_idx(path):
    with (gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')) as f:
        magic = f.read(4)
        dims = struct.unpack('>' + 'I' * magic[3], f.read(4 * magic[3]))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)


def lenet():
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def run(rank, a, q):
    torch.set_num_threads(1)
    if a.workers > 1:
        os.environ['MASTER_ADDR'] = '127.0.0.1'
        os.environ['MASTER_PORT'] = str(a.port)
        dist.init_process_group('gloo', rank=rank, world_size=a.workers)
    p = lambda n: os.path.join(a.data, n)
    xtr = torch.from_numpy(read_idx(p('train-images-idx3-ubyte')).reshape(-1, 1, 28, 28).astype(np.float32) / 255)
    ytr = torch.from_numpy(read_idx(p('train-labels-idx1-ubyte')).astype(np.int64))
    xte = torch.from_numpy(read_idx(p('t10k-images-idx3-ubyte')).reshape(-1, 1, 28, 28).astype(np.float32) / 255)
    yte = torch.from_numpy(read_idx(p('t10k-labels-idx1-ubyte')).astype(np.int64))
    torch.manual_seed(0)
    model = lenet()
    if a.workers > 1:
        model = DDP(model)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9)
    lossf = nn.CrossEntropyLoss()
    n = len(xtr)
    glob = a.batch * a.workers
    # --cosine: the learning rate decays to 0 over the run's steps, by the step (as ringtrain's "cosine").
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=(n // glob) * a.epochs) if a.cosine else None
    trained, seen, accs, at = 0.0, 0, [], []
    start = time.perf_counter()
    for epoch in range(a.epochs):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        t0 = time.perf_counter()
        model.train()
        for s in range(0, n - glob + 1, glob):
            idx = perm[s + rank * a.batch:s + (rank + 1) * a.batch]
            opt.zero_grad(set_to_none=True)
            loss = lossf(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            if sched:
                sched.step()
            seen += len(idx) * a.workers
        trained += time.perf_counter() - t0
        if rank == 0:
            model.eval()
            with torch.no_grad():
                correct = sum((model(xte[i:i + 500]).argmax(1) == yte[i:i + 500]).sum().item() for i in range(0, len(xte), 500))
            accs.append(round(correct / len(xte), 4))
            at.append(round(time.perf_counter() - start, 2))
        if a.workers > 1:
            dist.barrier()
    if rank == 0:
        q.put({'peer': 'pytorch' + ('-ddp-gloo' if a.workers > 1 else ''), 'torch': torch.__version__, 'workers': a.workers,
               'batch_per_worker': a.batch, 'epochs': a.epochs, 'samples_per_s': round(seen / trained, 1),
               'test_acc': accs, 'seconds_at_epoch': at, 'params': sum(x.numel() for x in model.parameters())})
    if a.workers > 1:
        dist.destroy_process_group()


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--data', required=True)
    ap.add_argument('--workers', type=int, default=1)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--epochs', type=int, default=5)
    ap.add_argument('--lr', type=float, default=0.05)
    ap.add_argument('--cosine', action='store_true')
    ap.add_argument('--port', type=int, default=29531)
    a = ap.parse_args()
    ctx = mp.get_context('spawn')
    q = ctx.Queue()
    procs = [ctx.Process(target=run, args=(r, a, q)) for r in range(a.workers)]
    for pr in procs:
        pr.start()
    print(json.dumps(q.get()))
    for pr in procs:
        pr.join()
