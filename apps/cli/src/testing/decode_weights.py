"""An independent reader of ringtrain's exported weights (numpy only, none of ringtrain's code).

Usage: decode_weights.py <export.safetensors> <checkpoint.safetensors> <idx folder>
Decodes every tensor as the file format documents it (F32, F16, I8 + per-row .scale, int4 packed
two's-complement nibbles low first + per-row .scale), compares with the checkpoint's float32
weights, runs the MLP over the IDX test set and prints one JSON line.
"""
import gzip, json, struct, sys
import numpy as np

def read_safetensors(path):
    with open(path, 'rb') as f:
        raw = f.read()
    n = struct.unpack('<Q', raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop('__metadata__', {})
    data = raw[8 + n:]
    dtypes = {'F32': '<f4', 'F16': '<f2', 'I8': 'i1', 'U8': 'u1'}
    out = {}
    for name, t in header.items():
        a, b = t['data_offsets']
        out[name] = np.frombuffer(data[a:b], dtype=dtypes[t['dtype']]).reshape(t['shape'])
    return out, meta

def read_idx(path):
    with (gzip.open if path.endswith('.gz') else open)(path, 'rb') as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack('>' + 'I' * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)

exported, meta = read_safetensors(sys.argv[1])
ckpt, _ = read_safetensors(sys.argv[2])
quant = meta['quantization']
report = {'quantization': quant, 'maxErrorOverHalfStep': 0.0, 'maxScaleRelError': 0.0}
weights = {}
for name, t in exported.items():
    if name.endswith('.scale'):
        continue
    w = ckpt[name].astype(np.float64)
    if t.dtype == np.uint8:  # int4: element 2k in the low nibble of byte k, 2k+1 in the high one
        cols = w.shape[1]
        nib = np.stack([t & 0x0F, t >> 4], axis=-1).reshape(t.shape[0], -1)[:, :cols].astype(np.int64)
        q = np.where(nib >= 8, nib - 16, nib)
    else:
        q = t
    if t.dtype in (np.int8, np.uint8):
        qmax = 127 if t.dtype == np.int8 else 7
        scale = exported[name + '.scale'].astype(np.float64)
        want = np.abs(w).max(axis=1) / qmax
        report['maxScaleRelError'] = max(report['maxScaleRelError'], float(np.max(np.abs(scale - want) / np.maximum(want, 1e-30))))
        d = q.astype(np.float64) * scale[:, None]
        report['maxErrorOverHalfStep'] = max(report['maxErrorOverHalfStep'], float(np.max(np.abs(d - w) / (scale[:, None] / 2))))
    else:
        d = t.astype(np.float64)
    weights[name] = d

spec = json.loads(meta['model_spec'])
x = read_idx(sys.argv[3] + '/t10k-images-idx3-ubyte').reshape(-1, 784).astype(np.float64) / 255
labels = read_idx(sys.argv[3] + '/t10k-labels-idx1-ubyte')
for i, layer in enumerate(spec['layers']):
    if layer['type'] == 'dense':
        x = x @ weights[f'layers.{i}.weight'].T + weights[f'layers.{i}.bias']
    elif layer['type'] == 'relu':
        x = np.maximum(x, 0)
    else:
        raise SystemExit('unsupported layer ' + layer['type'])
report['accuracy'] = float(np.mean(np.argmax(x, axis=1) == labels))
report['samples'] = int(len(labels))
print(json.dumps(report))
