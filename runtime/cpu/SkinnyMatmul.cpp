//===- SkinnyMatmul.cpp - matmuls of a few rows against a weight ----------===//
//
// A decoding step multiplies one row per sequence (a few rows in all) by
// every weight matrix: y[m, n] = x[m, :] . W[n, :] with W stored [N, K]
// as a linear layer keeps it. Such a product reads each weight once and
// does two flops per weight: it is bound by memory bandwidth, and what
// matters is streaming W at full speed from every core with nothing else
// in the way. oneDNN's GEMM is built for the other case and pays a fixed
// cost per call that is a third of a 768 x 768 product's time.
//
// Here the threads split W's rows, and each walks its share one weight row
// at a time, every row of x (up to kSkinnyRows, in L1) against it: each
// thread reads one sequential stream, which the hardware prefetchers follow
// at full speed (blocks of 8 rows read side by side, with software
// prefetches, reached 20-35% less bandwidth on AMD EPYC; bench/decoding.py
// sets the result beside a plain C loop over the same weights). The
// epilogue of a FusedMatmul (bias, scale, activation, residual) runs over a
// thread's outputs after its stream, so the streaming loop stays bare.
//
// The vector code is written once over GCC vector types and compiled per
// ISA (AVX-512, AVX2 + FMA, and the portable baseline), chosen by
// attention::bestIsa() (capped by KILN_MAX_ISA, so every path is testable
// on one machine).
//
//===----------------------------------------------------------------------===//
#include "runtime/cpu/SkinnyMatmul.h"
#include "runtime/Kernels.h"
#include "runtime/attention/BlockGemm.h"
#include "runtime/cpu/KernelUtil.h"

#include <omp.h>

#include <cmath>
#include <cstring>

using namespace kiln;
using namespace kiln::runtime;
using namespace kiln::runtime::cpu;
using kart::Op;

namespace {

using attention::Isa;

typedef float V4 __attribute__((vector_size(16)));
typedef float V8 __attribute__((vector_size(32)));
typedef float V16 __attribute__((vector_size(64)));

/// A thread's sums wait for the epilogue in a buffer of this many floats
/// on its stack, kMaxRows or more weight rows' worth.
constexpr int64_t kSumsPerChunk = 2048;
constexpr int64_t kMaxRows = 256;
static_assert(kSumsPerChunk / kMaxRows >= 1);

struct Problem {
  const float *x, *w;
  float *y;
  int64_t M, N, K;
  SkinnyEpilogue epi;
};

// The kernel, compiled for each instruction set (GCC applies a target
// pragma to the templates defined under it, so nothing is left to the
// baseline ISA by a failed inline).
#pragma GCC push_options
#pragma GCC target("avx512f,fma,tune=skylake-avx512")
namespace avx512 {
using V = V16;
#include "runtime/cpu/SkinnyMatmulKernel.inc"
void run(const Problem &p, int64_t n0, int64_t n1) { rowsOfW<V>(p, n0, n1); }
} // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,tune=haswell")
namespace avx2 {
using V = V8;
#include "runtime/cpu/SkinnyMatmulKernel.inc"
void run(const Problem &p, int64_t n0, int64_t n1) { rowsOfW<V>(p, n0, n1); }
} // namespace avx2
#pragma GCC pop_options

namespace baseline {
using V = V4;
#include "runtime/cpu/SkinnyMatmulKernel.inc"
void run(const Problem &p, int64_t n0, int64_t n1) { rowsOfW<V>(p, n0, n1); }
} // namespace baseline

} // namespace

float SkinnyEpilogue::apply(float v, int64_t n, int64_t at) const {
  v = (v + (bias ? bias[n] : 0.0f)) * scale;
  switch (act) {
  case kart::Activation::Relu:
    v = v > 0 ? v : 0.0f;
    break;
  case kart::Activation::Gelu:
  case kart::Activation::GeluTanh:
    v = geluOf(v, act == kart::Activation::GeluTanh);
    break;
  case kart::Activation::Silu:
    v = v / (1.0f + std::exp(-v));
    break;
  default:
    break;
  }
  return v + (residual ? residual[at] : 0.0f);
}

void kiln::runtime::cpu::skinnyProduct(attention::Isa isa, const float *x,
                                       const float *w, float *y, int64_t M,
                                       int64_t N, int64_t K,
                                       const SkinnyEpilogue &epi) {
  if (M <= 0 || N <= 0)
    return;
  // More rows than a chunk's buffer holds go in slices (a skinny product
  // has a few; this keeps any count correct).
  for (int64_t m0 = 0; m0 + kMaxRows < M; m0 += kMaxRows) {
    SkinnyEpilogue slice = epi;
    if (slice.residual)
      slice.residual += m0 * N;
    skinnyProduct(isa, x + m0 * K, w, y + m0 * N, kMaxRows, N, K, slice);
  }
  int64_t last = (M - 1) / kMaxRows * kMaxRows;
  SkinnyEpilogue tail = epi;
  if (tail.residual)
    tail.residual += last * N;
  Problem p{x + last * K, w, y + last * N, M - last, N, K, tail};
  void (*body)(const Problem &, int64_t, int64_t) = baseline::run;
  if (isa == Isa::Avx512)
    body = avx512::run;
  else if (isa == Isa::Avx2)
    body = avx2::run;
  if (N * K < kParallelWork) {
    body(p, 0, N);
    return;
  }
  // Equal shares of W's rows, in multiples of 16 so that no two threads
  // write to one cache line of y.
#pragma omp parallel
  {
    int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t blocks = (N + 15) / 16;
    int64_t b0 = blocks * t / nt, b1 = blocks * (t + 1) / nt;
    body(p, std::min(N, b0 * 16), std::min(N, b1 * 16));
  }
}

bool kiln::runtime::cpu::skinnyMatmul(KernelContext &c, Status &s) {
  const View &a = c.in[0], &b = c.in[1];
  if (b.quant || a.dtype != DType::F32 || b.dtype != DType::F32 ||
      b.shape->size() != 2)
    return false;
  MatmulForm form = matmulForm(c.kernel);
  const kart::FusedMatmulAttrs *f = form.fused;
  if (form.ta || !form.tb || form.reduceBatch)
    return false;
  int64_t K = a.shape->back(), N = (*b.shape)[0];
  if (K != (*b.shape)[1] || K == 0)
    return false;
  int64_t M = a.numel() / K;
  if (M < 1 || M > kSkinnyRows || c.out[0].numel() != M * N)
    return false;
  SkinnyEpilogue epi;
  if (f) {
    epi.bias = c.in[2].data ? c.in[2].as<float>() : nullptr;
    epi.residual = c.in[3].data ? c.in[3].as<float>() : nullptr;
    epi.scale = static_cast<float>(f->scale());
    epi.act = f->activation();
  }
  skinnyProduct(attention::bestIsa(), a.as<float>(), b.as<float>(),
                c.out[0].as<float>(), M, N, K, epi);
  s = Status::ok();
  return true;
}
