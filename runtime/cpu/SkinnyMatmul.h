//===- SkinnyMatmul.h - matmuls of a few rows against a weight --*- C++ -*-===//
#ifndef KILN_RUNTIME_CPU_SKINNYMATMUL_H
#define KILN_RUNTIME_CPU_SKINNYMATMUL_H

#include "runtime/attention/BlockGemm.h"
#include "runtime/kart_generated.h"

#include <cstdint>

namespace kiln::runtime::cpu {

/// A FusedMatmul's epilogue on one output: act(scale * (v + bias[n])) +
/// residual[at], as oneDNN's post-ops and the reference kernel apply it.
struct SkinnyEpilogue {
  const float *bias = nullptr, *residual = nullptr;
  float scale = 1;
  kart::Activation act = kart::Activation::None;
  float apply(float v, int64_t n, int64_t at) const;
  /// Nothing to apply: the sum is the output.
  bool trivial() const {
    return !bias && !residual && scale == 1 && act == kart::Activation::None;
  }
};

/// y[M, N] = epilogue(x[M, K] . w[N, K]^T), with the vector code of `isa`;
/// the threads of the OpenMP pool split w's rows when the product is large.
void skinnyProduct(attention::Isa isa, const float *x, const float *w, float *y,
                   int64_t M, int64_t N, int64_t K, const SkinnyEpilogue &epi);

} // namespace kiln::runtime::cpu

#endif
