// A transformer's kernels after the GEMMs: GELU, LayerNorm, and the core of causal self-attention
// (its products on OpenBLAS, read in place from the fused q|k|v rows). See transformer.c.
#ifndef RINGTRAIN_TRANSFORMER_H
#define RINGTRAIN_TRANSFORMER_H
#include <stddef.h>
#include <stdint.h>

// y = GELU(x) (tanh form) over n values; tanh(u) kept for the backward pass.
void rt_gelu(size_t n, const float *x, float *y, float *tanh_u);
// dx = dy·GELU'(x), from the kept tanh(u).
void rt_gelu_backward(size_t n, const float *x, const float *tanh_u, const float *dy, float *dx);

// Softmax cross-entropy of `rows` rows of `classes` logits against labels (each in 0..classes−1,
// checked by the caller): returns Σ over rows of −log softmax(z)[label]; with grad (else NULL),
// writes scale·(softmax(z) − onehot(label)) there.
double rt_softmax_xent(size_t rows, size_t classes, const float *logits, const int32_t *labels, float *grad, float scale);

// Each of `rows` rows of `width`: x̂ = (x − mean)·rstd, y = x̂·gain (+ bias, when not NULL).
void rt_layernorm(size_t rows, size_t width, float eps, const float *x, const float *gain, const float *bias, float *xhat,
                  float *rstd, float *y);
// dgain = Σ dy·x̂ and dbias = Σ dy (written; dbias may be NULL); dx (written, when not NULL).
void rt_layernorm_backward(size_t rows, size_t width, const float *dy, const float *xhat, const float *rstd, const float *gain,
                           float *dgain, float *dbias, float *dx);

// qkv: [batch·T, 3·heads·d] rows of q|k|v. Per head: P = softmax(q·kᵀ/√d + causal mask) into probs
// ([batch, heads, T, T], zero above the diagonal), and P·v into its d columns of out ([batch·T, heads·d]).
void rt_attention(size_t batch, size_t t, size_t heads, size_t d, const float *qkv, float *probs, float *out);
// The gradients of rt_attention: dqkv (written, [batch·T, 3·heads·d]) from dout and the kept probs.
// Returns 0, or -1 when out of memory.
int rt_attention_backward(size_t batch, size_t t, size_t heads, size_t d, const float *qkv, const float *probs, const float *dout,
                          float *dqkv);
#endif
