//===- Gemv.h - a few rows times a quantized weight -------------*- C++ -*-===//
//
// The decoding path of a matmul with a quantized weight: y = x Wᵀ for up to
// kGemvRows rows of x, the codes decoded in registers (Gemv.cpp). The tiled
// kernel (QuantMatmul.cpp) covers everything else.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_QUANT_GEMV_H
#define KILN_RUNTIME_QUANT_GEMV_H

#include "runtime/attention/BlockGemm.h"
#include "runtime/quant/QuantView.h"

namespace kiln::runtime::quant {

/// The most rows of x the decoding path takes (a batch of a few tokens).
constexpr int64_t kGemvRows = 4;

/// Whether gemv() handles `w` with M rows on `isa`: NF4 whose blocks
/// (a multiple of 64) tile each row, and int4 whose groups (a multiple of
/// 32) do, on AVX2 or AVX-512.
bool gemvCovers(attention::Isa isa, const QuantView &w, int64_t M);

/// y[m * ldy + n] = sum_k x[m * ldx + k] * W[n][k] for m < M, n < w.rows.
void gemv(attention::Isa isa, const QuantView &w, int64_t M, const float *x,
          int64_t ldx, float *y, int64_t ldy);

/// Rows [r0, r1) of W as f32, whole rows, vectorized (the tiled kernel's
/// dequantization): false, doing nothing, where gemvCovers(isa, w, 1) is
/// false.
bool decodeRows(attention::Isa isa, const QuantView &w, int64_t r0, int64_t r1,
                float *out, int64_t ldo);

} // namespace kiln::runtime::quant

#endif
