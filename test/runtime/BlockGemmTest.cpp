//===- BlockGemmTest.cpp - the attention micro-kernels on every ISA ------===//
//
// attention/BlockGemm.h against a double-precision product, for every
// instruction set this CPU runs (the baseline loops always): every tile
// shape and row tail (m = 1 .. 64), column counts with and without a
// partial 64-wide tile, A read transposed, accumulation and scaling.
//
//===----------------------------------------------------------------------===//
#include "runtime/attention/BlockGemm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace kiln::runtime::attention;

TEST(BlockGemm, EveryIsaMatchesADoubleProduct) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (Isa isa : supportedIsas())
    for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 13, 64})
      for (int64_t n : {16, 32, 48, 64, 80, 128, 7})
        for (int64_t k : {1, 5, 64})
          for (bool transposed : {false, true})
            for (bool accumulate : {false, true}) {
              SCOPED_TRACE(::testing::Message()
                           << isaName(isa) << " m=" << m << " n=" << n
                           << " k=" << k << " transposed=" << transposed
                           << " accumulate=" << accumulate);
              // A is m x k, stored k x m when read transposed; B and C with
              // row strides wider than their rows.
              int64_t ldb = n + 3, ldc = n + 5;
              std::vector<float> a(m * k), b(k * ldb), c(m * ldc);
              for (float &x : a)
                x = normal(rng);
              for (float &x : b)
                x = normal(rng);
              for (float &x : c)
                x = normal(rng);
              int64_t ars = transposed ? 1 : k, acs = transposed ? m : 1;
              std::vector<float> before = c;
              float alpha = 0.37f;
              blockGemm(isa, m, n, k, alpha, a.data(), ars, acs, b.data(), ldb,
                        c.data(), ldc, accumulate);
              for (int64_t r = 0; r < m; ++r)
                for (int64_t j = 0; j < ldc; ++j) {
                  size_t at = static_cast<size_t>(r * ldc + j);
                  if (j >= n) { // past the row: untouched
                    ASSERT_EQ(c[at], before[at]);
                    continue;
                  }
                  double want = accumulate ? before[at] : 0.0;
                  double dot = 0;
                  for (int64_t x = 0; x < k; ++x)
                    dot += static_cast<double>(a[r * ars + x * acs]) *
                           b[x * ldb + j];
                  want += alpha * dot;
                  ASSERT_NEAR(c[at], want, 1e-5 * (1 + std::abs(want)))
                      << "row " << r << " column " << j;
                }
            }
}

TEST(BlockGemm, TheBestIsaIsSupported) {
  std::vector<Isa> isas = supportedIsas();
  EXPECT_EQ(isas.front(), Isa::Baseline);
  EXPECT_EQ(isas.back(), bestIsa());
}
