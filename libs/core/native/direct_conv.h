// Stride-1 convolutions computed directly over padded copies of the planes (no im2col), with
// AVX-512 or AVX2 + FMA where the CPU has them. See direct_conv.c.
#ifndef RINGTRAIN_DIRECT_CONV_H
#define RINGTRAIN_DIRECT_CONV_H
#include <stddef.h>

// Rows and columns of one padded plane: one spare row for the two-row blocks, four spare columns
// for the five-wide blocks of the weight gradient.
#define DC_PAD_H(out_h, k) ((out_h) + (k))
#define DC_PAD_W(out_w, k) ((out_w) + (k) + 4)

// Instruction sets of the kernels, best last.
enum { DC_NONE = 0, DC_AVX2 = 1, DC_AVX512 = 2 };

// The best instruction set this CPU runs the kernels with.
int direct_conv_isa(void);
// y[n,f] = bias[f] + Σ_c w[f,c] ⋆ x[n,c]; keeps each sample's padded planes in xpad for the weight gradient.
// Returns 0, or -1 when out of memory.
int direct_conv_forward(int isa, const float *x, int batch, int c, int h, int w, int k, int pad_top, int pad_left, int out_h, int out_w,
                        const float *weight, int filters, const float *bias, float *xpad, float *y);
// dx[n,c] = Σ_f w[f,c] ⋆ᵀ dy[n,f] (dx written, not added).
int direct_conv_backward_data(int isa, const float *dy, int batch, int filters, int out_h, int out_w, const float *weight, int c, int h,
                              int w, int k, int pad_top, int pad_left, float *dx);
// dw[f,c] = Σ_n dy[n,f] ⋆ xpad[n,c] and db[f] = Σ dy[n,f] (both written, not added).
void direct_conv_backward_filter(int isa, const float *dy, const float *xpad, int batch, int filters, int c, int k, int out_h, int out_w,
                                 float *dw, float *db);
#endif
