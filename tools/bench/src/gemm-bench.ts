import { fileURLToPath } from 'node:url';
import { type Backend, createBackend, ReferenceBackend, WasmBackend } from '@ringtrain/core';
import { bestRate, fmt, runPeer } from './measure.js';
import { table } from '@ringtrain/cli';

const SHAPES: [number, number, number][] = [
  [128, 784, 256],
  [128, 256, 10],
  [256, 1024, 1024],
];
const FORMS = [
  ['AB', false, false],
  ['AtB', true, false],
  ['ABt', false, true],
] as const;

/** GEMM GFLOP/s of every backend beside numpy and PyTorch (single thread), in the same run. */
export function gemmBench(seconds: number): string {
  const backends: Backend[] = [new ReferenceBackend(), new WasmBackend()];
  const native = createBackend('auto').backend;
  if (native.name === 'native') backends.push(native);
  const ours = new Map<string, number>();
  for (const be of backends) {
    for (const [m, k, n] of SHAPES) {
      // The reference backend at 256×1024×1024 takes seconds per call; it is the yardstick, not a contender.
      if (be.name === 'reference' && m * k * n > 5e7) continue;
      for (const [form, ta, tb] of FORMS) {
        const a = be.alloc(m * k).map(() => Math.random() - 0.5);
        const b = be.alloc(k * n).map(() => Math.random() - 0.5);
        const A = be.alloc(m * k);
        const B = be.alloc(k * n);
        A.set(a);
        B.set(b);
        const C = be.alloc(m * n);
        ours.set(`${be.name} ${m}x${k}x${n} ${form}`, bestRate(() => be.gemm(ta, tb, m, n, k, A, B, C), 2 * m * n * k, seconds) / 1e9);
        for (const x of [A, B, C]) be.free(x);
      }
    }
  }
  const peerScript = fileURLToPath(new URL('../peers/gemm_peer.py', import.meta.url));
  const peers = new Map<string, number>();
  for (const r of runPeer(peerScript, ['--shapes', SHAPES.map((s) => s.join('x')).join(','), '--seconds', String(seconds)]) ?? []) {
    peers.set(`${r.peer} ${r.m}x${r.k}x${r.n} ${r.form}`, r.gflops as number);
  }
  const rows = SHAPES.flatMap(([m, k, n]) =>
    FORMS.map(([form]) => {
      const key = (who: string): number | undefined => (who === 'numpy' || who === 'torch' ? peers : ours).get(`${who} ${m}x${k}x${n} ${form}`);
      return [
        `${m}×${k}×${n}`,
        form,
        fmt(key('reference'), 2),
        fmt(key('wasm')),
        fmt(key('native')),
        fmt(key('numpy')),
        fmt(key('torch')),
        fmt((key('native') ?? NaN) / (key('numpy') ?? NaN), 2),
        fmt((key('wasm') ?? NaN) / (key('numpy') ?? NaN), 2),
      ];
    }),
  );
  return `GEMM GFLOP/s, single thread, (M,K,N); forms A·B, Aᵀ·B, A·Bᵀ\n${table(
    ['M×K×N', 'form', 'reference', 'wasm', 'native', 'numpy', 'torch', 'native/numpy', 'wasm/numpy'],
    rows,
  )}\nnative: ${native.name === 'native' ? native.description : 'not available'}`;
}
