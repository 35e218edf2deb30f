// WebAssembly SIMD kernels for @ringtrain/core. Compiled by AssemblyScript at build time.
//
// Every argument is a byte offset into the memory that JS owns and imports; nothing here
// allocates. Matrices are row-major float32.
//
// gemm computes C(m×n) = op(A)·op(B), or C += op(A)·op(B) when `accumulate` is set, where
//   op(A) is m×k: A is stored m×k, or k×m when transA (then op(A) = Aᵀ);
//   op(B) is k×n: B is stored k×n, or n×k when transB.
// Blocking: k is cut into KC-long slices; for each slice, B is packed into k-major panels of
// 8 columns (4 for a narrow tail) that stay in L1 while every row of A streams past them.
// A needs no packing: `v128.load32_splat` reads one element of a row and broadcasts it.

const KC: i32 = 256;

// c + a·b: one fused multiply-add where the build enables relaxed SIMD (kernels-fma.wasm), else
// a multiply then an add (kernels.wasm). The loader picks the FMA build when the engine takes it.
@inline
function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(c, f32x4.mul(a, b));
}

// Pack op(B)[k0..k0+kc) × [j0..j0+w) into `dst` as kc rows of `w` floats; columns past nb are 0.
@inline
function packB(transB: i32, b: usize, n: i32, k: i32, k0: i32, kc: i32, j0: i32, nb: i32, w: i32, dst: usize): void {
  for (let kk = 0; kk < kc; kk++) {
    const row = dst + <usize>(kk * w) * 4;
    if (transB) {
      const src = b + (<usize>j0 * <usize>k + <usize>(k0 + kk)) * 4;
      for (let jj = 0; jj < nb; jj++) store<f32>(row + <usize>jj * 4, load<f32>(src + <usize>jj * <usize>k * 4));
    } else {
      const src = b + (<usize>(k0 + kk) * <usize>n + <usize>j0) * 4;
      for (let jj = 0; jj < nb; jj++) store<f32>(row + <usize>jj * 4, load<f32>(src + <usize>jj * 4));
    }
    for (let jj = nb; jj < w; jj++) store<f32>(row + <usize>jj * 4, 0);
  }
}

// Write a 4-float vector to C at `dst`, adding what is there when `add`, keeping only `cols` lanes.
@inline
function put(dst: usize, v: v128, add: i32, cols: i32, tmp: usize): void {
  if (cols >= 4) {
    if (add) v = f32x4.add(v, v128.load(dst));
    v128.store(dst, v);
  } else if (cols > 0) {
    v128.store(tmp, v);
    for (let j = 0; j < cols; j++) {
      const o = <usize>j * 4;
      store<f32>(dst + o, add ? load<f32>(dst + o) + load<f32>(tmp + o) : load<f32>(tmp + o));
    }
  }
}

// Four rows of op(A) against one 8-wide panel. rs: bytes between rows of op(A); ks: bytes per k step.
function kernel4x8(pa: usize, rs: usize, ks: usize, pb: usize, kc: i32, c: usize, ldc: usize, add: i32, nb: i32, tmp: usize): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0), c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  let p0 = pa, p1 = pa + rs, p2 = pa + 2 * rs, p3 = pa + 3 * rs;
  for (let kk = 0; kk < kc; kk++) {
    const b0 = v128.load(pb), b1 = v128.load(pb, 16);
    pb += 32;
    let a = v128.load32_splat(p0);
    c00 = madd(a, b0, c00); c01 = madd(a, b1, c01);
    a = v128.load32_splat(p1);
    c10 = madd(a, b0, c10); c11 = madd(a, b1, c11);
    a = v128.load32_splat(p2);
    c20 = madd(a, b0, c20); c21 = madd(a, b1, c21);
    a = v128.load32_splat(p3);
    c30 = madd(a, b0, c30); c31 = madd(a, b1, c31);
    p0 += ks; p1 += ks; p2 += ks; p3 += ks;
  }
  const hi = nb - 4;
  put(c, c00, add, nb, tmp); put(c + 16, c01, add, hi, tmp); c += ldc;
  put(c, c10, add, nb, tmp); put(c + 16, c11, add, hi, tmp); c += ldc;
  put(c, c20, add, nb, tmp); put(c + 16, c21, add, hi, tmp); c += ldc;
  put(c, c30, add, nb, tmp); put(c + 16, c31, add, hi, tmp);
}

function kernel1x8(pa: usize, ks: usize, pb: usize, kc: i32, c: usize, add: i32, nb: i32, tmp: usize): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
  for (let kk = 0; kk < kc; kk++) {
    const a = v128.load32_splat(pa);
    c00 = madd(a, v128.load(pb), c00);
    c01 = madd(a, v128.load(pb, 16), c01);
    pb += 32; pa += ks;
  }
  put(c, c00, add, nb, tmp); put(c + 16, c01, add, nb - 4, tmp);
}

// The narrow path: four rows against a 4-wide panel (the last ≤ 4 columns, e.g. a 10-class output).
function kernel4x4(pa: usize, rs: usize, ks: usize, pb: usize, kc: i32, c: usize, ldc: usize, add: i32, nb: i32, tmp: usize): void {
  let c0 = f32x4.splat(0), c1 = f32x4.splat(0), c2 = f32x4.splat(0), c3 = f32x4.splat(0);
  let p0 = pa, p1 = pa + rs, p2 = pa + 2 * rs, p3 = pa + 3 * rs;
  for (let kk = 0; kk < kc; kk++) {
    const b0 = v128.load(pb);
    pb += 16;
    c0 = madd(v128.load32_splat(p0), b0, c0);
    c1 = madd(v128.load32_splat(p1), b0, c1);
    c2 = madd(v128.load32_splat(p2), b0, c2);
    c3 = madd(v128.load32_splat(p3), b0, c3);
    p0 += ks; p1 += ks; p2 += ks; p3 += ks;
  }
  put(c, c0, add, nb, tmp); c += ldc;
  put(c, c1, add, nb, tmp); c += ldc;
  put(c, c2, add, nb, tmp); c += ldc;
  put(c, c3, add, nb, tmp);
}

function kernel1x4(pa: usize, ks: usize, pb: usize, kc: i32, c: usize, add: i32, nb: i32, tmp: usize): void {
  let c0 = f32x4.splat(0);
  for (let kk = 0; kk < kc; kk++) {
    c0 = madd(v128.load32_splat(pa), v128.load(pb), c0);
    pb += 16; pa += ks;
  }
  put(c, c0, add, nb, tmp);
}

/** Bytes of scratch that gemm needs at `scratch` (one packed panel and a 16-byte tail buffer). */
export function gemmScratchBytes(): i32 {
  return KC * 8 * 4 + 16;
}

export function gemm(transA: i32, transB: i32, m: i32, n: i32, k: i32, a: usize, b: usize, c: usize, accumulate: i32, scratch: usize): void {
  const ldc = <usize>n * 4;
  const tmp = scratch + <usize>(KC * 8 * 4);
  if (k == 0) {
    if (!accumulate) for (let i = 0; i < m * n; i++) store<f32>(c + <usize>i * 4, 0);
    return;
  }
  // Byte strides of op(A): between rows, and per step along k.
  const rs: usize = transA ? 4 : <usize>k * 4;
  const ks: usize = transA ? <usize>m * 4 : 4;
  for (let k0 = 0; k0 < k; k0 += KC) {
    const kc = min(KC, k - k0);
    const add = accumulate || k0 > 0 ? 1 : 0;
    const aBase = a + <usize>k0 * ks;
    for (let j0 = 0; j0 < n; j0 += 8) {
      const nb = min(8, n - j0);
      const w = nb > 4 ? 8 : 4;
      packB(transB, b, n, k, k0, kc, j0, nb, w, scratch);
      const cCol = c + <usize>j0 * 4;
      let i = 0;
      if (w == 8) {
        for (; i + 4 <= m; i += 4) kernel4x8(aBase + <usize>i * rs, rs, ks, scratch, kc, cCol + <usize>i * ldc, ldc, add, nb, tmp);
        for (; i < m; i++) kernel1x8(aBase + <usize>i * rs, ks, scratch, kc, cCol + <usize>i * ldc, add, nb, tmp);
      } else {
        for (; i + 4 <= m; i += 4) kernel4x4(aBase + <usize>i * rs, rs, ks, scratch, kc, cCol + <usize>i * ldc, ldc, add, nb, tmp);
        for (; i < m; i++) kernel1x4(aBase + <usize>i * rs, ks, scratch, kc, cCol + <usize>i * ldc, add, nb, tmp);
      }
    }
  }
}

// ---- Optimizer updates over the flat buffers (4 lanes at a time, then the tail). ----

// SGD: v = μ·v + g + wd·p (when v != 0); p -= lr·(nesterov ? g + wd·p + μ·v : v); without v: p -= lr·(g + wd·p).
export function sgdUpdate(p: usize, g: usize, v: usize, n: i32, lr: f32, mu: f32, wd: f32, nesterov: i32): void {
  const vlr = f32x4.splat(lr), vmu = f32x4.splat(mu), vwd = f32x4.splat(wd);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i * 4;
    const pi = v128.load(p + o);
    const gi = f32x4.add(v128.load(g + o), f32x4.mul(vwd, pi));
    let step = gi;
    if (v) {
      const vi = f32x4.add(f32x4.mul(vmu, v128.load(v + o)), gi);
      v128.store(v + o, vi);
      step = nesterov ? f32x4.add(gi, f32x4.mul(vmu, vi)) : vi;
    }
    v128.store(p + o, f32x4.sub(pi, f32x4.mul(vlr, step)));
  }
  for (; i < n; i++) {
    const o = <usize>i * 4;
    const pi = load<f32>(p + o);
    const gi = load<f32>(g + o) + wd * pi;
    let step = gi;
    if (v) {
      const vi = mu * load<f32>(v + o) + gi;
      store<f32>(v + o, vi);
      step = nesterov ? gi + mu * vi : vi;
    }
    store<f32>(p + o, pi - lr * step);
  }
}

// Adam/AdamW: g' = g + l2·p; m = β1·m + (1−β1)·g'; v = β2·v + (1−β2)·g'²;
// p = p·shrink − stepSize·m / (√v / rootCorrection + eps).
export function adamUpdate(p: usize, g: usize, m: usize, v: usize, n: i32, stepSize: f32, b1: f32, b2: f32, eps: f32, rootCorrection: f32, l2: f32, shrink: f32): void {
  const vb1 = f32x4.splat(b1), vb2 = f32x4.splat(b2), vc1 = f32x4.splat(1 - b1), vc2 = f32x4.splat(1 - b2);
  const veps = f32x4.splat(eps), vrc = f32x4.splat(rootCorrection), vl2 = f32x4.splat(l2), vsh = f32x4.splat(shrink), vss = f32x4.splat(stepSize);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i * 4;
    const pi = v128.load(p + o);
    const gi = f32x4.add(v128.load(g + o), f32x4.mul(vl2, pi));
    const mi = f32x4.add(f32x4.mul(vb1, v128.load(m + o)), f32x4.mul(vc1, gi));
    const vi = f32x4.add(f32x4.mul(vb2, v128.load(v + o)), f32x4.mul(vc2, f32x4.mul(gi, gi)));
    v128.store(m + o, mi);
    v128.store(v + o, vi);
    const denom = f32x4.add(f32x4.div(f32x4.sqrt(vi), vrc), veps);
    v128.store(p + o, f32x4.sub(f32x4.mul(pi, vsh), f32x4.div(f32x4.mul(vss, mi), denom)));
  }
  for (; i < n; i++) {
    const o = <usize>i * 4;
    const pi = load<f32>(p + o);
    const gi = load<f32>(g + o) + l2 * pi;
    const mi = b1 * load<f32>(m + o) + (1 - b1) * gi;
    const vi = b2 * load<f32>(v + o) + (1 - b2) * gi * gi;
    store<f32>(m + o, mi);
    store<f32>(v + o, vi);
    store<f32>(p + o, pi * shrink - (stepSize * mi) / (Mathf.sqrt(vi) / rootCorrection + eps));
  }
}

// ---- Elementwise layer kernels. ----

// e^x in 4 lanes: Cephes' expf, as native/transformer.c's rt_exp (x = n·ln2 + r, a polynomial in r,
// then 2ⁿ by the exponent bits). Clamped to where 2ⁿ is a normal float; below −87, 0.
// @ts-ignore: decorator
@inline function exp4(x: v128): v128 {
  const lo = f32x4.splat(-87.0);
  const inRange = f32x4.ge(x, lo);
  x = f32x4.min(f32x4.max(x, lo), f32x4.splat(88.0));
  const shifter = f32x4.splat(12582912.0);
  const fx = f32x4.add(f32x4.mul(x, f32x4.splat(1.44269504088896341)), shifter);
  const nf = f32x4.sub(fx, shifter);
  const r = f32x4.add(f32x4.sub(x, f32x4.mul(nf, f32x4.splat(0.693359375))), f32x4.mul(nf, f32x4.splat(2.12194440e-4)));
  let p = f32x4.splat(1.9875691500e-4);
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.3981999507e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(8.3334519073e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(4.1665795894e-2));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.6666665459e-1));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(5.0000001201e-1));
  p = f32x4.add(f32x4.add(f32x4.mul(p, f32x4.mul(r, r)), r), f32x4.splat(1.0));
  const scale = i32x4.shl(i32x4.add(i32x4.sub(fx, i32x4.splat(0x4B400000)), i32x4.splat(127)), 23);
  return v128.and(f32x4.mul(p, scale), inRange);
}

// GELU, tanh form: y = ½x(1 + tanh u), u = √(2/π)(x + 0.044715x³), tanh u = 1 − 2/(e^{2u} + 1),
// kept in t for the backward pass. (The tail runs the same lanes on a splat.)
export function gelu(x: usize, y: usize, t: usize, n: i32): void {
  const c2 = f32x4.splat(1.5957691216057308), k = f32x4.splat(0.044715), one = f32x4.splat(1), two = f32x4.splat(2), half = f32x4.splat(0.5);
  for (let i = 0; i < n; i += 4) {
    const o = <usize>i * 4;
    const v = i + 4 <= n ? v128.load(x + o) : f32x4.splat(load<f32>(x + o));
    const u = f32x4.mul(c2, f32x4.add(v, f32x4.mul(k, f32x4.mul(v, f32x4.mul(v, v)))));
    const th = f32x4.sub(one, f32x4.div(two, f32x4.add(exp4(u), one)));
    const out = f32x4.mul(f32x4.mul(half, v), f32x4.add(one, th));
    if (i + 4 <= n) {
      v128.store(t + o, th);
      v128.store(y + o, out);
    } else {
      // The last 1–3 values, one at a time.
      for (let j = i; j < n; j++) {
        const oj = <usize>j * 4;
        const vj = f32x4.splat(load<f32>(x + oj));
        const uj = f32x4.mul(c2, f32x4.add(vj, f32x4.mul(k, f32x4.mul(vj, f32x4.mul(vj, vj)))));
        const tj = f32x4.sub(one, f32x4.div(two, f32x4.add(exp4(uj), one)));
        store<f32>(t + oj, f32x4.extract_lane(tj, 0));
        store<f32>(y + oj, f32x4.extract_lane(f32x4.mul(f32x4.mul(half, vj), f32x4.add(one, tj)), 0));
      }
    }
  }
}

// y = x > 0 ? x : α·x (ReLU when α = 0). NaN stays NaN, so a diverging run shows in the loss.
export function leakyRelu(x: usize, y: usize, n: i32, alpha: f32): void {
  const va = f32x4.splat(alpha), zero = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i * 4;
    const xv = v128.load(x + o);
    v128.store(y + o, v128.bitselect(xv, f32x4.mul(xv, va), f32x4.gt(xv, zero)));
  }
  for (; i < n; i++) {
    const xi = load<f32>(x + <usize>i * 4);
    store<f32>(y + <usize>i * 4, xi > 0 ? xi : alpha * xi);
  }
}

// dx = x > 0 ? dy : α·dy
export function leakyReluBackward(x: usize, dy: usize, dx: usize, n: i32, alpha: f32): void {
  const va = f32x4.splat(alpha), zero = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i * 4;
    const d = v128.load(dy + o);
    v128.store(dx + o, v128.bitselect(d, f32x4.mul(d, va), f32x4.gt(v128.load(x + o), zero)));
  }
  for (; i < n; i++) {
    const o = <usize>i * 4;
    const d = load<f32>(dy + o);
    store<f32>(dx + o, load<f32>(x + o) > 0 ? d : alpha * d);
  }
}

// y[r, :] += b for every row r.
export function addBiasRows(y: usize, b: usize, rows: i32, cols: i32): void {
  for (let r = 0; r < rows; r++) {
    const row = y + <usize>r * <usize>cols * 4;
    let c = 0;
    for (; c + 4 <= cols; c += 4) {
      const o = <usize>c * 4;
      v128.store(row + o, f32x4.add(v128.load(row + o), v128.load(b + o)));
    }
    for (; c < cols; c++) store<f32>(row + <usize>c * 4, load<f32>(row + <usize>c * 4) + load<f32>(b + <usize>c * 4));
  }
}

// out[c] = Σ_r x[r, c]
export function sumRows(x: usize, rows: i32, cols: i32, out: usize): void {
  for (let c = 0; c < cols; c++) store<f32>(out + <usize>c * 4, 0);
  for (let r = 0; r < rows; r++) {
    const row = x + <usize>r * <usize>cols * 4;
    let c = 0;
    for (; c + 4 <= cols; c += 4) {
      const o = <usize>c * 4;
      v128.store(out + o, f32x4.add(v128.load(out + o), v128.load(row + o)));
    }
    for (; c < cols; c++) store<f32>(out + <usize>c * 4, load<f32>(out + <usize>c * 4) + load<f32>(row + <usize>c * 4));
  }
}

// ---- Convolution unfolding (layout and meaning: src/layers/conv-geometry.ts). ----

// The first and one-past-last output column whose input column lies inside the image.
@inline
function validLo(padLeft: i32, j: i32, stride: i32): i32 {
  const d = padLeft - j;
  return d <= 0 ? 0 : (d + stride - 1) / stride;
}
@inline
function validHi(w: i32, padLeft: i32, j: i32, stride: i32, outW: i32): i32 {
  const d = w - 1 + padLeft - j;
  const hi = d < 0 ? 0 : d / stride + 1;
  return hi < outW ? hi : outW;
}

// Sample n's block of col is [C·kh·kw, outH·outW]; zero where the window covers padding. Loops run
// sample by sample and channel by channel, so the plane being read stays in L1.
export function im2col(x: usize, batch: i32, c: i32, h: i32, w: i32, kh: i32, kw: i32, stride: i32, padTop: i32, padLeft: i32, outH: i32, outW: i32, col: usize): void {
  const plane = outH * outW;
  for (let n = 0; n < batch; n++) {
    for (let ch = 0; ch < c; ch++) {
      const src = x + <usize>((n * c + ch) * h * w) * 4;
      for (let i = 0; i < kh; i++) {
        for (let j = 0; j < kw; j++) {
          const lo = validLo(padLeft, j, stride);
          let hi = validHi(w, padLeft, j, stride, outW);
          if (hi < lo) hi = lo;
          const first = lo * stride - padLeft + j;
          let o = col + <usize>((((n * c + ch) * kh + i) * kw + j) * plane) * 4;
          for (let oy = 0; oy < outH; oy++, o += <usize>outW * 4) {
            const y = oy * stride - padTop + i;
            // Inline loops: rows are short (a 14-wide plane), and a bulk-memory call per row
            // costs more than the row.
            if (y < 0 || y >= h) {
              for (let ox = 0; ox < outW; ox++) store<f32>(o + <usize>ox * 4, 0);
              continue;
            }
            for (let ox = 0; ox < lo; ox++) store<f32>(o + <usize>ox * 4, 0);
            const at = src + <usize>(y * w + first) * 4;
            if (stride == 1) {
              let ox = lo;
              for (; ox + 4 <= hi; ox += 4) v128.store(o + <usize>ox * 4, v128.load(at + <usize>(ox - lo) * 4));
              for (; ox < hi; ox++) store<f32>(o + <usize>ox * 4, load<f32>(at + <usize>(ox - lo) * 4));
            } else {
              for (let ox = lo; ox < hi; ox++) store<f32>(o + <usize>ox * 4, load<f32>(at + <usize>((ox - lo) * stride) * 4));
            }
            for (let ox = hi; ox < outW; ox++) store<f32>(o + <usize>ox * 4, 0);
          }
        }
      }
    }
  }
}

// The adjoint of im2col: dx = 0, then every entry of col is added to the pixel it came from.
export function col2im(col: usize, batch: i32, c: i32, h: i32, w: i32, kh: i32, kw: i32, stride: i32, padTop: i32, padLeft: i32, outH: i32, outW: i32, dx: usize): void {
  const plane = outH * outW;
  for (let n = 0; n < batch; n++) {
    for (let ch = 0; ch < c; ch++) {
      const dst = dx + <usize>((n * c + ch) * h * w) * 4;
      for (let p = 0; p < h * w; p++) store<f32>(dst + <usize>p * 4, 0);
      for (let i = 0; i < kh; i++) {
        for (let j = 0; j < kw; j++) {
          const lo = validLo(padLeft, j, stride);
          let hi = validHi(w, padLeft, j, stride, outW);
          if (hi < lo) hi = lo;
          const first = lo * stride - padLeft + j;
          let o = col + <usize>((((n * c + ch) * kh + i) * kw + j) * plane) * 4;
          for (let oy = 0; oy < outH; oy++, o += <usize>outW * 4) {
            const y = oy * stride - padTop + i;
            if (y < 0 || y >= h) continue;
            const at = dst + <usize>(y * w + first) * 4;
            if (stride == 1) {
              let ox = lo;
              for (; ox + 4 <= hi; ox += 4) {
                const q = at + <usize>(ox - lo) * 4;
                v128.store(q, f32x4.add(v128.load(q), v128.load(o + <usize>ox * 4)));
              }
              for (; ox < hi; ox++) {
                const q = at + <usize>(ox - lo) * 4;
                store<f32>(q, load<f32>(q) + load<f32>(o + <usize>ox * 4));
              }
            } else {
              for (let ox = lo; ox < hi; ox++) {
                const q = at + <usize>((ox - lo) * stride) * 4;
                store<f32>(q, load<f32>(q) + load<f32>(o + <usize>ox * 4));
              }
            }
          }
        }
      }
    }
  }
}

// ---- Max pooling (no padding); argmax holds, per output, the index in x of its maximum. ----

export function maxPool(x: usize, planes: i32, h: i32, w: i32, kh: i32, kw: i32, stride: i32, outH: i32, outW: i32, y: usize, argmax: usize): void {
  if (kh == 2 && kw == 2 && stride == 2) {
    maxPool2x2(x, planes, h, w, outH, outW, y, argmax);
    return;
  }
  let o: usize = 0;
  for (let plane = 0; plane < planes; plane++) {
    const base = plane * h * w;
    for (let oy = 0; oy < outH; oy++) {
      for (let ox = 0; ox < outW; ox++, o++) maxOfWindow(x, base + oy * stride * w + ox * stride, kh, kw, w, y, argmax, o);
    }
  }
}

// Output o: the maximum of the kh×kw window at `top` and where it is.
@inline
function maxOfWindow(x: usize, top: i32, kh: i32, kw: i32, w: i32, y: usize, argmax: usize, o: usize): void {
  let best = top;
  let v = load<f32>(x + <usize>top * 4);
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) {
      const at = top + i * w + j;
      const xv = load<f32>(x + <usize>at * 4);
      // Strictly greater: the first maximum wins a tie, as in the reference loop.
      if (xv > v) {
        v = xv;
        best = at;
      }
    }
  }
  store<f32>(y + o * 4, v);
  store<i32>(argmax + o * 4, best);
}

// 2×2 windows, stride 2 (the common pool), four outputs at a time and without branches: the
// scalar loop's compare is a coin toss for the branch predictor. The same candidates in the same
// order, each taken only when strictly greater: the same maxima and argmax, ties and NaN included.
function maxPool2x2(x: usize, planes: i32, h: i32, w: i32, outH: i32, outW: i32, y: usize, argmax: usize): void {
  let o: usize = 0;
  for (let plane = 0; plane < planes; plane++) {
    const base = plane * h * w;
    for (let oy = 0; oy < outH; oy++, o += <usize>outW) {
      const row = base + oy * 2 * w;
      let ox = 0;
      for (; ox + 4 <= outW; ox += 4) maxPool2x2Four(x, row + ox * 2, w, y, argmax, o + <usize>ox);
      if (ox == outW) continue;
      // The row's last outputs: four again, overlapping ones already written (the same values; a
      // scalar tail was 40% of lenet's second pool, whose rows are 7 outputs).
      if (outW >= 4) maxPool2x2Four(x, row + (outW - 4) * 2, w, y, argmax, o + <usize>(outW - 4));
      else for (; ox < outW; ox++) maxOfWindow(x, row + ox * 2, 2, 2, w, y, argmax, o + <usize>ox);
    }
  }
}

// Four 2×2 windows side by side from x[top]: outputs o..o+3 and where their maxima were.
@inline
function maxPool2x2Four(x: usize, top: i32, w: i32, y: usize, argmax: usize, o: usize): void {
  const p0 = x + <usize>top * 4;
  const p1 = p0 + <usize>w * 4;
  const a0 = v128.load(p0), a1 = v128.load(p0, 16), b0 = v128.load(p1), b1 = v128.load(p1, 16);
  const tops = i32x4.add(i32x4.splat(top), i32x4(0, 2, 4, 6));
  let v = v128.shuffle<f32>(a0, a1, 0, 2, 4, 6);
  let at = tops;
  let c = v128.shuffle<f32>(a0, a1, 1, 3, 5, 7);
  let m = f32x4.gt(c, v);
  v = v128.bitselect(c, v, m);
  at = v128.bitselect(i32x4.add(tops, i32x4.splat(1)), at, m);
  c = v128.shuffle<f32>(b0, b1, 0, 2, 4, 6);
  m = f32x4.gt(c, v);
  v = v128.bitselect(c, v, m);
  at = v128.bitselect(i32x4.add(tops, i32x4.splat(w)), at, m);
  c = v128.shuffle<f32>(b0, b1, 1, 3, 5, 7);
  m = f32x4.gt(c, v);
  v = v128.bitselect(c, v, m);
  at = v128.bitselect(i32x4.add(tops, i32x4.splat(w + 1)), at, m);
  v128.store(y + o * 4, v);
  v128.store(argmax + o * 4, at);
}

// dx = 0, then each output's gradient goes to where its maximum was.
export function maxPoolBackward(dy: usize, argmax: usize, n: i32, dx: usize, inputs: i32): void {
  for (let i = 0; i < inputs; i++) store<f32>(dx + <usize>i * 4, 0);
  for (let o = 0; o < n; o++) {
    const at = dx + <usize>load<i32>(argmax + <usize>o * 4) * 4;
    store<f32>(at, load<f32>(at) + load<f32>(dy + <usize>o * 4));
  }
}
