#!/usr/bin/env python3
"""GEMM GFLOP/s of numpy and PyTorch, single-threaded, in the three forms backprop uses.

Usage: gemm_peer.py --shapes 128x784x256,... [--seconds 0.3]
Prints one JSON line per (peer, shape, form): {"peer", "m", "k", "n", "form", "gflops"}.
Forms: AB = A·B, AtB = Aᵀ·B (A stored k×m), ABt = A·Bᵀ (B stored n×k).
"""
import argparse, json, time
import numpy as np


def best_rate(fn, flops, seconds):
    fn()
    reps, best = 1, float('inf')
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        dt = (time.perf_counter() - t0) / reps
        best = min(best, dt)
        if dt * reps < 0.01:
            reps *= 2
    return flops / best / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--shapes', required=True)
    ap.add_argument('--seconds', type=float, default=0.3)
    a = ap.parse_args()
    peers = {'numpy': None}
    try:
        import torch
        torch.set_num_threads(1)
        peers['torch'] = torch
    except ImportError:
        pass
    g = np.random.default_rng(0)
    for shape in a.shapes.split(','):
        m, k, n = (int(v) for v in shape.split('x'))
        flops = 2.0 * m * n * k
        for form in ('AB', 'AtB', 'ABt'):
            A = g.standard_normal((k, m) if form == 'AtB' else (m, k), dtype=np.float32)
            B = g.standard_normal((n, k) if form == 'ABt' else (k, n), dtype=np.float32)
            opA = (lambda x: x.T) if form == 'AtB' else (lambda x: x)
            opB = (lambda x: x.T) if form == 'ABt' else (lambda x: x)
            C = np.empty((m, n), dtype=np.float32)
            rate = best_rate(lambda: np.matmul(opA(A), opB(B), out=C), flops, a.seconds)
            print(json.dumps({'peer': 'numpy', 'm': m, 'k': k, 'n': n, 'form': form, 'gflops': round(rate, 2)}), flush=True)
            if 'torch' in peers:
                torch = peers['torch']
                tA, tB, tC = torch.from_numpy(A), torch.from_numpy(B), torch.from_numpy(C)
                rate = best_rate(lambda: torch.matmul(opA(tA), opB(tB), out=tC), flops, a.seconds)
                print(json.dumps({'peer': 'torch', 'm': m, 'k': k, 'n': n, 'form': form, 'gflops': round(rate, 2)}), flush=True)


if __name__ == '__main__':
    main()
