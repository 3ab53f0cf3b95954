//===- Gemm.h - one matrix product as a BLAS library computes it -*- C++
//-*-===//
//
// The CUDA device hands matrix products to cuBLASLt when it can load it
// (runtime/cuda/CublasLt.cpp); runtime/cuda/Launch.cpp maps kiln's
// row-major, broadcast-batched Matmul/FusedMatmul kernels onto calls of this
// form, and the tests' emulation computes the same calls on the CPU, so the
// mapping is checked without a GPU. The form is cuBLASLt's (column-major):
//
//   D = act(alpha * op(A) op(B) + beta * C + bias)
//
// for `batch` products, product j's operands at a + j * strideA, ..., with
// op(X) = X or its transpose, A of m x k, B of k x n, C and D of m x n.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_CUDA_GEMM_H
#define KILN_RUNTIME_CUDA_GEMM_H

#include <cstdint>

namespace kiln::runtime::cuda {

struct GemmCall {
  enum class Activation { None, Relu };

  const float *a = nullptr, *b = nullptr;
  /// C is read only when beta is not zero; it may be D itself.
  const float *c = nullptr;
  float *d = nullptr;
  bool transA = false, transB = false;
  int64_t m = 0, n = 0, k = 0;
  /// Leading dimensions (column strides) of A, B and of both C and D.
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t batch = 1;
  /// Element strides between the products' operands (0: shared); C's is
  /// D's.
  int64_t strideA = 0, strideB = 0, strideC = 0;
  float alpha = 1.0f, beta = 0.0f;
  /// m values added to every column of every product (or null).
  const float *bias = nullptr;
  Activation activation = Activation::None;
};

} // namespace kiln::runtime::cuda

#endif
