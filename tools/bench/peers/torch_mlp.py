#!/usr/bin/env python3
"""PyTorch single-process training throughput: MLP on an MNIST-format folder, one thread.

Usage: torch_mlp.py --data DIR [--hidden 256,128] [--batch 64] [--epochs 4] [--lr 0.05]
The first epoch warms up and is not timed. Prints one JSON line: samples_per_s, test_acc.
"""
import argparse, gzip, json, os, struct, time
import numpy as np
import torch, torch.nn as nn


def read_idx(path):
    with (gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')) as f:
        magic = f.read(4)
        dims = struct.unpack('>' + 'I' * magic[3], f.read(4 * magic[3]))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--data', required=True)
    ap.add_argument('--hidden', default='256,128')
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--epochs', type=int, default=4)
    ap.add_argument('--lr', type=float, default=0.05)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    p = lambda n: os.path.join(a.data, n)
    xtr = torch.from_numpy(read_idx(p('train-images-idx3-ubyte')).reshape(-1, 784).astype(np.float32) / 255)
    ytr = torch.from_numpy(read_idx(p('train-labels-idx1-ubyte')).astype(np.int64))
    xte = torch.from_numpy(read_idx(p('t10k-images-idx3-ubyte')).reshape(-1, 784).astype(np.float32) / 255)
    yte = torch.from_numpy(read_idx(p('t10k-labels-idx1-ubyte')).astype(np.int64))
    sizes = [784] + [int(h) for h in a.hidden.split(',') if h] + [10]
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9)
    lossf = nn.CrossEntropyLoss()
    n = len(xtr)
    timed, seen = 0.0, 0
    for epoch in range(a.epochs):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        t0 = time.perf_counter()
        count = 0
        for s in range(0, n - a.batch + 1, a.batch):
            idx = perm[s:s + a.batch]
            opt.zero_grad(set_to_none=True)
            loss = lossf(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            count += a.batch
        if epoch > 0:
            timed += time.perf_counter() - t0
            seen += count
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    print(json.dumps({'peer': 'pytorch', 'torch': torch.__version__, 'samples_per_s': round(seen / timed, 1), 'test_acc': round(acc, 4)}))


if __name__ == '__main__':
    main()
