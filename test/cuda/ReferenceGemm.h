//===- ReferenceGemm.h - cuBLASLt's product, computed on the CPU -*- C++
//-*-===//
//
// What cuBLASLt computes for a runtime/cuda/Gemm.h call (column-major,
// op(A) m x k, op(B) k x n, strided batches, beta * C, bias and ReLU
// epilogues), summed in double: the emulated launchers and drivers stand
// in for the library with it, so the mapping of kiln's products onto BLAS
// calls is checked without a GPU.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_TEST_CUDA_REFERENCEGEMM_H
#define KILN_TEST_CUDA_REFERENCEGEMM_H

#include "runtime/cuda/Gemm.h"

#include <vector>

inline void kilnReferenceGemm(const kiln::runtime::cuda::GemmCall &g) {
  using Act = kiln::runtime::cuda::GemmCall::Activation;
  std::vector<float> d(static_cast<size_t>(g.m * g.n));
  for (int64_t p = 0; p < g.batch; ++p) {
    const float *A = g.a + p * g.strideA, *B = g.b + p * g.strideB;
    const float *C = g.c ? g.c + p * g.strideC : nullptr;
    float *D = g.d + p * g.strideC;
    // Computed aside first: C may be D.
    for (int64_t j = 0; j < g.n; ++j)
      for (int64_t i = 0; i < g.m; ++i) {
        double acc = 0;
        for (int64_t l = 0; l < g.k; ++l) {
          double x = g.transA ? A[l + i * g.lda] : A[i + l * g.lda];
          double y = g.transB ? B[j + l * g.ldb] : B[l + j * g.ldb];
          acc += x * y;
        }
        double v = g.alpha * acc;
        if (g.beta != 0.0f)
          v += static_cast<double>(g.beta) * C[i + j * g.ldc];
        if (g.bias)
          v += g.bias[i];
        if (g.activation == Act::Relu && v < 0)
          v = 0;
        d[i + j * g.m] = static_cast<float>(v);
      }
    for (int64_t j = 0; j < g.n; ++j)
      for (int64_t i = 0; i < g.m; ++i)
        D[i + j * g.ldc] = d[i + j * g.m];
  }
}

#endif
