import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyScaling, embeddedCorpusPath } from '@ringtrain/data';
import ort from 'onnxruntime-node';
import { afterEach, describe, expect, it } from 'vitest';
import { loadModelFile } from './model-file.js';
import { killStarted, startRingtrain } from './testing/run-process.js';

afterEach(killStarted);

async function ringtrain(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = startRingtrain(args);
  const code = await r.exited;
  return { code, stdout: r.stdout, stderr: r.stderr };
}

const dir = mkdtempSync(join(tmpdir(), 'ringtrain-onnx-'));
const write = (name: string, content: string): string => {
  writeFileSync(join(dir, name), content);
  return join(dir, name);
};

// A table whose columns differ by orders of magnitude: the export must carry its standardization.
const csv = write('table.csv', `a,b,c,label\n${Array.from({ length: 90 }, (_, i) => `${(i % 3) * 1000 + i},${(i % 7) / 100},${i % 5},${['x', 'y', 'z'][i % 3]}`).join('\n')}\n`);
const text = write('text.txt', readFileSync(embeddedCorpusPath(), 'utf8').slice(0, 20_000));
const blobs = (features: number) => ({ source: 'synthetic', kind: 'blobs', samples: 120, features, classes: 3, seed: 2 });

/** Each model kind, and what it is trained on; every layer type the exporter writes is in one of them. */
const CASES = [
  {
    name: 'an MLP on a CSV, its standardization in the graph (relu, sigmoid)',
    args: ['--data', `csv:${csv}`],
    job: { model: { layers: [{ type: 'dense', units: 16 }, { type: 'relu' }, { type: 'dense', units: 8 }, { type: 'sigmoid' }, { type: 'dense' }], loss: 'softmax_cross_entropy' } },
  },
  {
    name: "a convnet (conv 'same' stride 2, group norm, leaky relu, max pool, padded conv, tanh, global average pool, GELU, dropout)",
    args: [],
    job: {
      dataset: blobs(3 * 8 * 8),
      model: {
        inputShape: [3, 8, 8],
        layers: [
          { type: 'conv2d', filters: 4, kernelSize: 3, padding: 'same', stride: 2 },
          { type: 'groupnorm', groups: 2 },
          { type: 'leaky_relu', alpha: 0.1 },
          { type: 'maxpool2d', size: 2 },
          { type: 'conv2d', filters: 6, kernelSize: 3, padding: 1 },
          { type: 'tanh' },
          { type: 'globalavgpool' },
          { type: 'dense', units: 8 },
          { type: 'gelu' },
          { type: 'dropout', rate: 0.1 },
          { type: 'dense' },
        ],
        loss: 'softmax_cross_entropy',
      },
    },
  },
  {
    name: 'a convnet with valid convolutions, average pooling, flatten, and a dense layer straight on an image',
    args: [],
    job: {
      dataset: blobs(2 * 9 * 9),
      model: { inputShape: [2, 9, 9], layers: [{ type: 'conv2d', filters: 3, kernelSize: 2 }, { type: 'avgpool2d', size: 2, stride: 2 }, { type: 'conv2d', filters: 3, kernelSize: 2 }, { type: 'dense', units: 5 }, { type: 'relu' }, { type: 'flatten' }, { type: 'dense' }], loss: 'softmax_cross_entropy' },
    },
  },
  { name: 'a GPT (tied embeddings, LayerNorm without bias, dropout)', args: ['--data', `text:${text}`], job: { model: { type: 'gpt', layers: 2, heads: 2, dim: 16, context: 12, tied: true, bias: false, dropout: 0.1 } } },
  { name: 'a GPT on byte-level BPE', args: ['--data', `text:${text}`, '--tokenizer', 'bpe:300'], job: { model: { type: 'gpt', layers: 2, heads: 4, dim: 16, context: 8 } } },
];

/** The ONNX checker of the `onnx` package (Debian's python3-onnx), with its shape inference. */
function onnxCheck(path: string): string {
  return execFileSync('/usr/bin/python3', ['-c', 'import onnx, sys; m = onnx.load(sys.argv[1]); onnx.checker.check_model(m, full_check=True); print("ok", m.opset_import[0].version)', path], { encoding: 'utf8' }).trim();
}

describe('export --format onnx: a standard ONNX model, checked, that computes what ringtrain computes (real processes, onnxruntime)', () => {
  CASES.forEach((c, n) => {
    it(c.name, async () => {
      const job = write(`job-${n}.json`, JSON.stringify(c.job));
      const weights = join(dir, `m${n}.safetensors`);
      const trained = await ringtrain(['train', '--config', job, ...c.args, '--max-steps', '3', '--save-final', weights]);
      expect(trained.code, trained.stderr.slice(-1500)).toBe(0);
      const onnxFile = join(dir, `m${n}.onnx`);
      const exported = await ringtrain(['export', weights, '-o', onnxFile]);
      expect(exported.code, exported.stderr).toBe(0);
      expect(exported.stdout).toMatch(/ONNX opset 17/);
      expect(onnxCheck(onnxFile)).toBe('ok 17');

      const { model, scaling } = loadModelFile(weights);
      const lm = model.positions > 1;
      const classes = model.outputSize / model.positions;
      const batch = 5;
      const input = new Float32Array(batch * model.inputSize);
      for (let i = 0; i < input.length; i++) input[i] = lm ? (i * 7919) % classes : Math.sin(i * 12.9898) * (scaling ? 500 : 2);
      const scaled = model.backend.alloc(input.length);
      scaled.set(input);
      if (scaling) applyScaling(scaled, scaling);
      const ours = Float32Array.from(model.forward(scaled, batch, false));
      const session = await ort.InferenceSession.create(onnxFile);
      const dims = lm ? [batch, model.inputSize] : [batch, ...(model.spec.inputShape ?? [model.inputSize])];
      const feed = lm ? new ort.Tensor('int64', BigInt64Array.from(input, (v) => BigInt(v)), dims) : new ort.Tensor('float32', input, dims);
      const out = (await session.run({ input: feed })).logits;
      expect(out.dims).toEqual(lm ? [batch, model.inputSize, classes] : [batch, classes]);
      const theirs = out.data as Float32Array;
      let [diff, spread] = [0, 0];
      for (let i = 0; i < ours.length; i++) {
        diff = Math.max(diff, Math.abs(theirs[i] - ours[i]));
        spread = Math.max(spread, Math.abs(ours[i] - ours[0]));
      }
      expect(diff).toBeLessThanOrEqual(1e-4);
      expect(spread).toBeGreaterThan(1e-3); // the logits differ from one another: the comparison is real
      if (lm) {
        // Any sequence up to the context: a shorter one gets the first positions' logits (causal).
        const S = 3;
        const short = BigInt64Array.from({ length: batch * S }, (_, i) => BigInt(input[Math.floor(i / S) * model.inputSize + (i % S)]));
        const prefix = (await session.run({ input: new ort.Tensor('int64', short, [batch, S]) })).logits.data as Float32Array;
        let d = 0;
        for (let b = 0; b < batch; b++) for (let t = 0; t < S; t++) for (let v = 0; v < classes; v++) d = Math.max(d, Math.abs(prefix[(b * S + t) * classes + v] - ours[(b * model.inputSize + t) * classes + v]));
        expect(d).toBeLessThanOrEqual(1e-4);
      }
    }, 60_000);
  });

  it('refuses what it cannot write, with a coded error and no file', async () => {
    const weights = join(dir, 'm0.safetensors');
    const q = await ringtrain(['export', weights, '-o', join(dir, 'q.onnx'), '--quantize', 'int8']);
    expect(q.code).toBe(1);
    expect(q.stderr).toMatch(/ERR_ARGUMENT: --quantize int8 with --format onnx/);
    const named = await ringtrain(['export', weights, '-o', join(dir, 'x.onnx'), '--format', 'json']);
    expect(named.code).toBe(1);
    expect(named.stderr).toMatch(/ERR_ARGUMENT: -o .*x\.onnx names a \.onnx file, but --format is json/);
    expect(() => readFileSync(join(dir, 'q.onnx'))).toThrow();
  }, 30_000);
});
