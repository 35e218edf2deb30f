#!/usr/bin/env python3
"""PyTorch peer for models/gpt.json: nanoGPT's character-level CPU recipe, one process or DDP (Gloo).

Usage: torch_gpt.py --text FILE [--workers N] [--steps 2000] [--layers 4] [--heads 4] [--dim 128]
                    [--context 64] [--batch 12] [--eval-windows 256] [--eval-every 0]
The same model as ringtrain's GPT short form: token + learned position embedding, pre-norm blocks
(LayerNorm without bias, causal attention with one fused QKV projection, MLP 4·dim with GELU
(tanh)), final LayerNorm, a head over the characters; linear layers with biases, N(0, 0.02) init.
AdamW lr 1e-3 → 1e-4 (cosine, 100 warm-up steps), β2 0.99, weight decay 0.1 on tensors of 2+
dimensions, clipping at 1.0. Data as ringtrain's text source: characters sorted by code point, the
last 10% held out, training windows that cover the text once per epoch (shuffled), validation on
evenly spaced windows. Per-rank batch B, one thread per rank.
Prints one JSON line: tokens_per_s (training steps only), val_loss, seconds, peak_rss_mb, params,
and with --eval-every K, evals: [step, val loss, training seconds so far] every K steps (the
evaluations' own time is not counted in the seconds).
"""
import argparse, json, math, os, resource, time
import torch, torch.nn as nn, torch.nn.functional as F, torch.distributed as dist, torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim, bias=False) if 'bias' in nn.LayerNorm.__init__.__code__.co_varnames else nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim, bias=False) if 'bias' in nn.LayerNorm.__init__.__code__.co_varnames else nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(4 * dim, dim)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(c // self.heads)
        att = att.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float('-inf')).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate='tanh'))


class GPT(nn.Module):
    def __init__(self, vocab, context, layers, heads, dim):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(context, dim)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(dim, bias=False) if 'bias' in nn.LayerNorm.__init__.__code__.co_varnames else nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        return self.head(self.ln(self.blocks(x)))


def lr_at(step, total, base=1e-3, floor=1e-4, warm=100):
    if step < warm:
        return base * (step + 1) / warm
    p = min(1.0, (step - warm) / max(1, total - warm))
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * p))


def run(rank, a, q):
    torch.set_num_threads(1)
    if a.workers > 1:
        os.environ['MASTER_ADDR'] = '127.0.0.1'
        os.environ['MASTER_PORT'] = str(a.port)
        dist.init_process_group('gloo', rank=rank, world_size=a.workers)
    text = open(a.text, encoding='utf-8').read()
    chars = sorted(set(text))
    ix = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([ix[c] for c in text], dtype=torch.long)
    cut = int(len(data) * 0.9)
    train, val = data[:cut], data[cut:]
    T = a.context
    starts = torch.arange(0, (len(train) - 1) // T * T, T)
    nval = (len(val) - 1) // T
    nev = min(nval, a.eval_windows)
    vstarts = torch.tensor([(i * nval // nev) * T for i in range(nev)])
    xv = torch.stack([val[i:i + T] for i in vstarts])
    yv = torch.stack([val[i + 1:i + T + 1] for i in vstarts])

    def val_loss():
        model.eval()
        with torch.no_grad():
            total = sum(F.cross_entropy(model(xv[i:i + 64]).view(-1, len(chars)), yv[i:i + 64].reshape(-1), reduction='sum').item() for i in range(0, len(xv), 64))
        model.train()
        return total / (len(xv) * T)

    torch.manual_seed(0)
    model = GPT(len(chars), T, a.layers, a.heads, a.dim)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.1}, {'params': rest, 'weight_decay': 0.0}], lr=1e-3, betas=(0.9, 0.99))
    net = DDP(model) if a.workers > 1 else model
    glob = a.batch * a.workers
    step, trained, epoch, evals = 0, 0.0, 0, []
    t_start = time.perf_counter()
    while step < a.steps:
        perm = starts[torch.randperm(len(starts), generator=torch.Generator().manual_seed(epoch))]
        for s in range(0, len(perm) - glob + 1, glob):
            if step >= a.steps:
                break
            t0 = time.perf_counter()
            w = perm[s + rank * a.batch:s + (rank + 1) * a.batch]
            x = torch.stack([train[i:i + T] for i in w])
            y = torch.stack([train[i + 1:i + T + 1] for i in w])
            for g in opt.param_groups:
                g['lr'] = lr_at(step, a.steps)
            loss = F.cross_entropy(net(x).view(-1, len(chars)), y.view(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            trained += time.perf_counter() - t0
            step += 1
            if a.eval_every and step % a.eval_every == 0 and step < a.steps:
                evals.append([step, val_loss(), trained])
        epoch += 1
    wall = time.perf_counter() - t_start
    vl = val_loss()
    evals.append([step, vl, trained])
    if rank == 0:
        q.put({'workers': a.workers, 'steps': step, 'tokens_per_s': step * glob * T / trained, 'seconds': wall, 'trained_seconds': trained, 'val_loss': vl,
               'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'params': params, 'vocab': len(chars), 'evals': evals})
    if a.workers > 1:
        dist.destroy_process_group()


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--text', required=True)
    p.add_argument('--workers', type=int, default=1)
    p.add_argument('--steps', type=int, default=2000)
    p.add_argument('--layers', type=int, default=4)
    p.add_argument('--heads', type=int, default=4)
    p.add_argument('--dim', type=int, default=128)
    p.add_argument('--context', type=int, default=64)
    p.add_argument('--batch', type=int, default=12)
    p.add_argument('--eval-windows', type=int, default=256)
    p.add_argument('--eval-every', type=int, default=0)
    p.add_argument('--port', type=int, default=29533)
    a = p.parse_args()
    q = mp.get_context('spawn').SimpleQueue()
    if a.workers == 1:
        run(0, a, q)
    else:
        mp.spawn(run, args=(a, q), nprocs=a.workers)
    print(json.dumps(q.get()))
