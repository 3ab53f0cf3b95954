//===- SkinnyMatmulTest.cpp - decoding-step matmuls on every ISA ----------===//
//
// cpu/SkinnyMatmul.h against a double-precision product, for every
// instruction set this CPU runs (the baseline loops always): 1 to 8 rows of
// x (every group and tail) and more than one slice of rows, weight row
// counts with and without a partial chunk, K with and without a vector
// tail, products large enough to be split over the threads, and each part
// of a FusedMatmul's epilogue, the residual also in place.
//
//===----------------------------------------------------------------------===//
#include "runtime/cpu/SkinnyMatmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace kiln;
using namespace kiln::runtime::attention;
using namespace kiln::runtime::cpu;

namespace {

double activate(double v, kart::Activation act) {
  switch (act) {
  case kart::Activation::Relu:
    return v > 0 ? v : 0;
  case kart::Activation::Gelu:
    return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
  case kart::Activation::GeluTanh:
    return 0.5 * v *
           (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
  case kart::Activation::Silu:
    return v / (1 + std::exp(-v));
  default:
    return v;
  }
}

} // namespace

TEST(SkinnyMatmul, EveryIsaMatchesADoubleProduct) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  struct Size {
    int64_t n, k;
  };
  const Size sizes[] = {{1, 1},   {3, 7},    {4, 16},    {5, 17},
                        {17, 33}, {33, 100}, {300, 260}, {1000, 96}};
  // 1 to 8 rows of x, and counts past the 256 rows one slice takes.
  const int64_t rows[] = {1, 2, 3, 4, 5, 6, 7, 8, 256, 261};
  for (Isa isa : supportedIsas())
    for (int64_t m : rows)
      for (Size sz : sizes)
        // 0: none; 1: bias, scale, activation; 2: and a residual; 3: the
        // residual is the output itself (added in place).
        for (int epilogue = 0; epilogue < 4; ++epilogue) {
          int64_t n = sz.n, k = sz.k;
          kart::Activation act = epilogue == 0
                                     ? kart::Activation::None
                                     : static_cast<kart::Activation>(
                                           1 + (m + n) % 4); // Relu .. Silu
          SCOPED_TRACE(::testing::Message()
                       << isaName(isa) << " m=" << m << " n=" << n << " k=" << k
                       << " epilogue=" << epilogue
                       << " act=" << kart::EnumNameActivation(act));
          std::vector<float> x(m * k), w(n * k), y(m * n, -7.0f), bias(n),
              res(m * n);
          for (std::vector<float> *v : {&x, &w, &bias, &res})
            for (float &e : *v)
              e = normal(rng);
          SkinnyEpilogue e;
          if (epilogue) {
            e.bias = bias.data();
            e.scale = 0.75f;
            e.act = act;
            e.residual = epilogue == 2 ? res.data() : nullptr;
          }
          if (epilogue == 3) {
            y = res;
            e.residual = y.data();
          }
          skinnyProduct(isa, x.data(), w.data(), y.data(), m, n, k, e);
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
              double dot = 0;
              for (int64_t t = 0; t < k; ++t)
                dot += static_cast<double>(x[i * k + t]) * w[j * k + t];
              double want = dot;
              if (epilogue)
                want = activate((dot + bias[j]) * 0.75, act) +
                       (epilogue >= 2 ? res[i * n + j] : 0.0);
              ASSERT_NEAR(
                  y[i * n + j], want,
                  2e-5 * (std::sqrt(static_cast<double>(k)) + std::abs(want)))
                  << "row " << i << " column " << j;
            }
        }
}
