//===- CublasLtTest.cpp - kiln's view of cuBLASLt vs the real library -----===//
//
// The runtime declares the part of cuBLASLt it uses itself
// (runtime/cuda/CublasLtApi.h: no toolkit needed to build it). Here, where
// the toolkit is installed, those declarations are checked against its
// cublasLt.h at compile time, and the real library is loaded through
// runtime/cuda/CublasLt.cpp: every entry point resolves, and the library
// accepts the descriptors of the calls kiln's products become (host-side
// calls, so no GPU is needed). The products themselves run on a GPU
// (scripts/gpu-check.sh); without one, ReferenceGemm.h stands in.
//
//===----------------------------------------------------------------------===//
#include "runtime/cuda/CublasLt.h"

#include <cublasLt.h>
#include <gtest/gtest.h>

#include <cstddef>

using namespace kiln::runtime;
namespace lt = kiln::runtime::cuda::lt;

static_assert(lt::kComputeF32 == CUBLAS_COMPUTE_32F);
static_assert(lt::kDataF32 == CUDA_R_32F);
static_assert(lt::kOpN == CUBLAS_OP_N && lt::kOpT == CUBLAS_OP_T);
static_assert(lt::kDescTransA == CUBLASLT_MATMUL_DESC_TRANSA);
static_assert(lt::kDescTransB == CUBLASLT_MATMUL_DESC_TRANSB);
static_assert(lt::kDescEpilogue == CUBLASLT_MATMUL_DESC_EPILOGUE);
static_assert(lt::kDescBiasPointer == CUBLASLT_MATMUL_DESC_BIAS_POINTER);
static_assert(lt::kLayoutBatchCount == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT);
static_assert(lt::kLayoutBatchStride ==
              CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET);
static_assert(lt::kPrefMaxWorkspace ==
              CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES);
static_assert(lt::kEpilogueDefault == CUBLASLT_EPILOGUE_DEFAULT);
static_assert(lt::kEpilogueRelu == CUBLASLT_EPILOGUE_RELU);
static_assert(lt::kEpilogueBias == CUBLASLT_EPILOGUE_BIAS);
static_assert(lt::kEpilogueReluBias == CUBLASLT_EPILOGUE_RELU_BIAS);
static_assert(sizeof(lt::Algo) == sizeof(cublasLtMatmulAlgo_t));
static_assert(sizeof(lt::HeuristicResult) ==
              sizeof(cublasLtMatmulHeuristicResult_t));
static_assert(offsetof(lt::HeuristicResult, workspaceSize) ==
              offsetof(cublasLtMatmulHeuristicResult_t, workspaceSize));
static_assert(offsetof(lt::HeuristicResult, state) ==
              offsetof(cublasLtMatmulHeuristicResult_t, state));
static_assert(sizeof(lt::Status) == sizeof(cublasStatus_t));

// Each entry point takes what the header's does: as many parameters, each
// (and the result) of the same size — kiln's opaque handles are pointers
// and its enums ints.
template <typename RA, typename... PA, typename RB, typename... PB>
constexpr bool sameShape(RA (*)(PA...), RB (*)(PB...)) {
  if constexpr (sizeof...(PA) != sizeof...(PB))
    return false;
  else
    return sizeof(RA) == sizeof(RB) && ((sizeof(PA) == sizeof(PB)) && ...);
}
#define KILN_SAME_SHAPE(member, symbol)                                        \
  static_assert(                                                               \
      sameShape(static_cast<decltype(lt::Api::member)>(nullptr), &symbol),     \
      #symbol);
KILN_CUBLASLT_ENTRIES(KILN_SAME_SHAPE)
#undef KILN_SAME_SHAPE

namespace {

std::unique_ptr<cuda::CublasLt> loadReal() {
  std::unique_ptr<cuda::CublasLt> b;
  Status s = cuda::CublasLt::load({KILN_CUBLASLT_LIBRARY}, b);
  EXPECT_TRUE(s) << s.message();
  return b;
}

TEST(CublasLt, TheToolkitsLibraryLoadsWithEveryEntryPoint) {
  std::unique_ptr<cuda::CublasLt> b = loadReal();
  ASSERT_TRUE(b);
  std::string d = b->describe();
  EXPECT_EQ(d.rfind("cuBLASLt ", 0), 0u) << d;
  EXPECT_EQ(d.find("cuBLASLt " + std::to_string(CUBLAS_VER_MAJOR) + "."), 0u)
      << d;
}

TEST(CublasLt, TheLibraryAcceptsTheDescriptorsOfKilnsCalls) {
  std::unique_ptr<cuda::CublasLt> b = loadReal();
  ASSERT_TRUE(b);
  float bias[16];
  cuda::GemmCall plain;
  plain.m = 9;
  plain.n = 15;
  plain.k = 7;
  plain.lda = 9;
  plain.ldb = 7;
  plain.ldc = 9;
  cuda::GemmCall batched = plain;
  batched.transA = batched.transB = true;
  batched.lda = 7;
  batched.ldb = 15;
  batched.batch = 6;
  batched.strideA = 63;
  batched.strideB = 0;
  batched.strideC = 135;
  batched.bias = bias;
  batched.activation = cuda::GemmCall::Activation::Relu;
  batched.beta = 1.0f;
  for (const cuda::GemmCall &g : {plain, batched}) {
    cuda::CublasLt::Descriptors d;
    Status s = b->prepare(g, d);
    ASSERT_TRUE(s) << s.message();
    EXPECT_NE(d.desc, nullptr);
    EXPECT_NE(d.d, nullptr);
  }
}

TEST(CublasLt, LibrariesThatAreMissingOrWrongAreNamed) {
  std::unique_ptr<cuda::CublasLt> b;
  Status s =
      cuda::CublasLt::load({"/nonexistent/libcublasLt.so.13", "libm.so.6"}, b);
  ASSERT_FALSE(s);
  EXPECT_FALSE(b);
  EXPECT_NE(s.message().find("/nonexistent/libcublasLt.so.13"),
            std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("libm.so.6 lacks cublasLtGetVersion"),
            std::string::npos)
      << s.message();
  s = cuda::CublasLt::load({}, b);
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("KILN_CUBLASLT=off"), std::string::npos);
}

} // namespace
