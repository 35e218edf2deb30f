#!/usr/bin/env python3
"""PyTorch peer for `ringtrain generate`: the GPT of models/gpt.json (torch_gpt.py's) decoding with a
key/value cache, one thread.

Usage: torch_generate.py [--tokens 500] [--vocab 85] [--layers 4] [--heads 4] [--dim 128] [--context 64]
Each new token costs one position: q, k, v of that position; k and v appended to the layer's cache;
attention over the cache. As ringtrain's generate, the window slides by half when full (the last
T/2 tokens are stepped again from position 0). Sampling at temperature 0.8 from a seeded stream.
Prints one JSON line: tokens_per_s (after the prompt), tokens.
"""
import argparse, json, math, time
import torch, torch.nn.functional as F
from torch_gpt import GPT


@torch.no_grad()
def step(model, token, pos, cache):
    """Logits for `token` at `pos`; cache[i] holds layer i's keys and values for positions < pos."""
    x = model.tok.weight[token] + model.pos.weight[pos]
    for i, b in enumerate(model.blocks):
        c = x.shape[-1]
        q, k, v = b.qkv(b.ln1(x)).split(c)
        keys, values = cache[i]
        keys[pos], values[pos] = k, v
        h = b.heads
        d = c // h
        qh = q.view(h, 1, d)
        kh = keys[:pos + 1].view(pos + 1, h, d).transpose(0, 1)
        vh = values[:pos + 1].view(pos + 1, h, d).transpose(0, 1)
        att = (qh @ kh.transpose(1, 2) / math.sqrt(d)).softmax(-1)
        x = x + b.proj((att @ vh).reshape(c))
        x = x + b.out(F.gelu(b.fc(b.ln2(x)), approximate='tanh'))
    return model.head(model.ln(x))


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--tokens', type=int, default=500)
    p.add_argument('--vocab', type=int, default=85)
    p.add_argument('--layers', type=int, default=4)
    p.add_argument('--heads', type=int, default=4)
    p.add_argument('--dim', type=int, default=128)
    p.add_argument('--context', type=int, default=64)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = GPT(a.vocab, a.context, a.layers, a.heads, a.dim).eval()
    T = a.context
    cache = [(torch.zeros(T, a.dim), torch.zeros(T, a.dim)) for _ in range(a.layers)]
    gen = torch.Generator().manual_seed(1)
    out = [1, 2, 3, 4]
    pos = 0
    for t in out:
        logits = step(model, t, pos, cache)
        pos += 1
    t0 = time.perf_counter()
    for n in range(a.tokens):
        nxt = int(torch.multinomial((logits / 0.8).softmax(-1), 1, generator=gen))
        out.append(nxt)
        if n + 1 == a.tokens:
            break
        if pos == T:
            pos = 0
            for t in out[-(T + 1) // 2:]:
                logits = step(model, t, pos, cache)
                pos += 1
        else:
            logits = step(model, nxt, pos, cache)
            pos += 1
    seconds = time.perf_counter() - t0
    print(json.dumps({'tokens': a.tokens, 'tokens_per_s': a.tokens / seconds}))


if __name__ == '__main__':
    main()
