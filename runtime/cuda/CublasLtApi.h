//===- CublasLtApi.h - the part of cublasLt.h kiln uses ---------*- C++ -*-===//
//
// cuBLASLt's types, constants and entry points as its header declares them,
// so the runtime loads the library with dlopen and builds without the CUDA
// toolkit. test/cuda/CublasLtTest.cpp checks every value here against the
// toolkit's own cublasLt.h where one is installed.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_CUDA_CUBLASLTAPI_H
#define KILN_RUNTIME_CUDA_CUBLASLTAPI_H

#include <cstddef>
#include <cstdint>

namespace kiln::runtime::cuda::lt {

using Status = int; // cublasStatus_t; 0 is success
using Handle = void *;
using MatmulDesc = void *;
using Layout = void *;
using Preference = void *;
struct Algo {
  uint64_t data[8];
};
struct HeuristicResult {
  Algo algo;
  size_t workspaceSize;
  Status state;
  float wavesCount;
  int reserved[4];
};

constexpr int kComputeF32 = 68; // CUBLAS_COMPUTE_32F
constexpr int kDataF32 = 0;     // CUDA_R_32F
constexpr int32_t kOpN = 0, kOpT = 1;
// cublasLtMatmulDescAttributes_t
constexpr int kDescTransA = 3, kDescTransB = 4, kDescEpilogue = 7,
              kDescBiasPointer = 8;
// cublasLtMatrixLayoutAttribute_t
constexpr int kLayoutBatchCount = 5, kLayoutBatchStride = 6;
// cublasLtMatmulPreferenceAttributes_t
constexpr int kPrefMaxWorkspace = 1;
// cublasLtEpilogue_t
constexpr uint32_t kEpilogueDefault = 1, kEpilogueRelu = 2, kEpilogueBias = 4,
                   kEpilogueReluBias = 6;

/// The entry points, resolved by name from the library.
struct Api {
  size_t (*getVersion)();
  const char *(*getStatusString)(Status);
  Status (*create)(Handle *);
  Status (*destroy)(Handle);
  Status (*matmulDescCreate)(MatmulDesc *, int, int);
  Status (*matmulDescDestroy)(MatmulDesc);
  Status (*matmulDescSetAttribute)(MatmulDesc, int, const void *, size_t);
  Status (*layoutCreate)(Layout *, int, uint64_t, uint64_t, int64_t);
  Status (*layoutDestroy)(Layout);
  Status (*layoutSetAttribute)(Layout, int, const void *, size_t);
  Status (*preferenceCreate)(Preference *);
  Status (*preferenceDestroy)(Preference);
  Status (*preferenceSetAttribute)(Preference, int, const void *, size_t);
  Status (*algoGetHeuristic)(Handle, MatmulDesc, Layout, Layout, Layout, Layout,
                             Preference, int, HeuristicResult *, int *);
  Status (*matmul)(Handle, MatmulDesc, const void *, const void *, Layout,
                   const void *, Layout, const void *, const void *, Layout,
                   void *, Layout, const Algo *, void *, size_t, void *);
};

/// Api's members with their library names, for resolving and for tests.
#define KILN_CUBLASLT_ENTRIES(X)                                               \
  X(getVersion, cublasLtGetVersion)                                            \
  X(getStatusString, cublasLtGetStatusString)                                  \
  X(create, cublasLtCreate)                                                    \
  X(destroy, cublasLtDestroy)                                                  \
  X(matmulDescCreate, cublasLtMatmulDescCreate)                                \
  X(matmulDescDestroy, cublasLtMatmulDescDestroy)                              \
  X(matmulDescSetAttribute, cublasLtMatmulDescSetAttribute)                    \
  X(layoutCreate, cublasLtMatrixLayoutCreate)                                  \
  X(layoutDestroy, cublasLtMatrixLayoutDestroy)                                \
  X(layoutSetAttribute, cublasLtMatrixLayoutSetAttribute)                      \
  X(preferenceCreate, cublasLtMatmulPreferenceCreate)                          \
  X(preferenceDestroy, cublasLtMatmulPreferenceDestroy)                        \
  X(preferenceSetAttribute, cublasLtMatmulPreferenceSetAttribute)              \
  X(algoGetHeuristic, cublasLtMatmulAlgoGetHeuristic)                          \
  X(matmul, cublasLtMatmul)

} // namespace kiln::runtime::cuda::lt

#endif
