//===- BlockGemm.cpp - register-blocked products of attention blocks ------===//
#include "runtime/attention/BlockGemm.h"

#include <immintrin.h>

#include <cstdio>
#include <cstdlib>
#include <string>

using namespace kiln::runtime::attention;

namespace {

struct Args {
  int64_t m, n, k;
  float alpha;
  const float *a;
  int64_t ars, acs;
  const float *b;
  int64_t ldb;
  float *c;
  int64_t ldc;
  bool accumulate;
};

void baseline(const Args &g) {
  for (int64_t r = 0; r < g.m; ++r) {
    float *cr = g.c + r * g.ldc;
    if (!g.accumulate)
      for (int64_t j = 0; j < g.n; ++j)
        cr[j] = 0.0f;
    // Accumulate alpha * A B into C row by row (C starts at zero or at its
    // old value; alpha scales only the product).
    for (int64_t c = 0; c < g.k; ++c) {
      float av = g.alpha * g.a[r * g.ars + c * g.acs];
      const float *bc = g.b + c * g.ldb;
      for (int64_t j = 0; j < g.n; ++j)
        cr[j] += av * bc[j];
    }
  }
}

// --- AVX-512: MR rows x NV vectors of 16 ------------------------------------

template <int MR, int NV>
__attribute__((target("avx512f,fma"), always_inline)) inline void
tile512(const Args &g, int64_t r0, int64_t j0) {
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v)
      acc[r][v] = _mm512_setzero_ps();
  const float *a = g.a + r0 * g.ars;
  const float *b = g.b + j0;
  for (int64_t c = 0; c < g.k; ++c) {
    __m512 bv[NV];
    for (int v = 0; v < NV; ++v)
      bv[v] = _mm512_loadu_ps(b + c * g.ldb + 16 * v);
    for (int r = 0; r < MR; ++r) {
      __m512 av = _mm512_set1_ps(a[r * g.ars + c * g.acs]);
      for (int v = 0; v < NV; ++v)
        acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  __m512 alpha = _mm512_set1_ps(g.alpha);
  for (int r = 0; r < MR; ++r) {
    float *cr = g.c + (r0 + r) * g.ldc + j0;
    for (int v = 0; v < NV; ++v) {
      __m512 x = _mm512_mul_ps(acc[r][v], alpha);
      if (g.accumulate)
        x = _mm512_add_ps(x, _mm512_loadu_ps(cr + 16 * v));
      _mm512_storeu_ps(cr + 16 * v, x);
    }
  }
}

template <int MR>
__attribute__((target("avx512f,fma"), always_inline)) inline void
rows512(const Args &g, int64_t r0) {
  int64_t j = 0;
  for (; j + 64 <= g.n; j += 64)
    tile512<MR, 4>(g, r0, j);
  switch ((g.n - j) / 16) {
  case 3:
    tile512<MR, 3>(g, r0, j);
    break;
  case 2:
    tile512<MR, 2>(g, r0, j);
    break;
  case 1:
    tile512<MR, 1>(g, r0, j);
    break;
  }
}

__attribute__((target("avx512f,fma"))) void avx512(const Args &g) {
  int64_t r = 0;
  for (; r + 4 <= g.m; r += 4)
    rows512<4>(g, r);
  switch (g.m - r) {
  case 3:
    rows512<3>(g, r);
    break;
  case 2:
    rows512<2>(g, r);
    break;
  case 1:
    rows512<1>(g, r);
    break;
  }
}

// --- AVX2: MR rows x NV vectors of 8 ----------------------------------------

template <int MR, int NV>
__attribute__((target("avx2,fma"), always_inline)) inline void
tile256(const Args &g, int64_t r0, int64_t j0) {
  __m256 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v)
      acc[r][v] = _mm256_setzero_ps();
  const float *a = g.a + r0 * g.ars;
  const float *b = g.b + j0;
  for (int64_t c = 0; c < g.k; ++c) {
    __m256 bv[NV];
    for (int v = 0; v < NV; ++v)
      bv[v] = _mm256_loadu_ps(b + c * g.ldb + 8 * v);
    for (int r = 0; r < MR; ++r) {
      __m256 av = _mm256_broadcast_ss(a + r * g.ars + c * g.acs);
      for (int v = 0; v < NV; ++v)
        acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  __m256 alpha = _mm256_set1_ps(g.alpha);
  for (int r = 0; r < MR; ++r) {
    float *cr = g.c + (r0 + r) * g.ldc + j0;
    for (int v = 0; v < NV; ++v) {
      __m256 x = _mm256_mul_ps(acc[r][v], alpha);
      if (g.accumulate)
        x = _mm256_add_ps(x, _mm256_loadu_ps(cr + 8 * v));
      _mm256_storeu_ps(cr + 8 * v, x);
    }
  }
}

template <int MR>
__attribute__((target("avx2,fma"), always_inline)) inline void
rows256(const Args &g, int64_t r0) {
  for (int64_t j = 0; j < g.n; j += 16)
    tile256<MR, 2>(g, r0, j);
}

__attribute__((target("avx2,fma"))) void avx2(const Args &g) {
  int64_t r = 0;
  for (; r + 6 <= g.m; r += 6)
    rows256<6>(g, r);
  switch (g.m - r) {
  case 5:
    rows256<5>(g, r);
    break;
  case 4:
    rows256<4>(g, r);
    break;
  case 3:
    rows256<3>(g, r);
    break;
  case 2:
    rows256<2>(g, r);
    break;
  case 1:
    rows256<1>(g, r);
    break;
  }
}

} // namespace

Isa kiln::runtime::attention::bestIsa() {
  // What the CPU runs, capped by KILN_MAX_ISA (baseline, avx2 or avx512) to
  // exercise the portable paths on a machine with wider vectors. Read once:
  // a property of the process, like the CPU itself.
  static const Isa best = [] {
    __builtin_cpu_init();
    Isa isa = Isa::Baseline;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      isa = Isa::Avx2;
    if (isa == Isa::Avx2 && __builtin_cpu_supports("avx512f"))
      isa = Isa::Avx512;
    if (const char *cap = std::getenv("KILN_MAX_ISA")) {
      std::string c = cap;
      Isa limit = c == "baseline" ? Isa::Baseline
                  : c == "avx2"   ? Isa::Avx2
                                  : Isa::Avx512;
      if (c != "baseline" && c != "avx2" && c != "avx512")
        std::fprintf(stderr,
                     "kiln: warning: KILN_MAX_ISA=%s is not baseline, avx2 "
                     "or avx512; ignored\n",
                     cap);
      else if (limit < isa)
        isa = limit;
    }
    return isa;
  }();
  return best;
}

std::vector<Isa> kiln::runtime::attention::supportedIsas() {
  std::vector<Isa> out = {Isa::Baseline};
  if (bestIsa() >= Isa::Avx2)
    out.push_back(Isa::Avx2);
  if (bestIsa() >= Isa::Avx512)
    out.push_back(Isa::Avx512);
  return out;
}

const char *kiln::runtime::attention::isaName(Isa isa) {
  switch (isa) {
  case Isa::Baseline:
    return "baseline";
  case Isa::Avx2:
    return "avx2";
  case Isa::Avx512:
    return "avx512";
  }
  return "?";
}

void kiln::runtime::attention::blockGemm(Isa isa, int64_t m, int64_t n,
                                         int64_t k, float alpha, const float *a,
                                         int64_t ars, int64_t acs,
                                         const float *b, int64_t ldb, float *c,
                                         int64_t ldc, bool accumulate) {
  Args g{m, n, k, alpha, a, ars, acs, b, ldb, c, ldc, accumulate};
  if (m <= 0 || n <= 0)
    return;
  // The SIMD paths take whole vectors of 16 columns.
  if (n % 16 != 0)
    isa = Isa::Baseline;
  switch (isa) {
  case Isa::Avx512:
    return avx512(g);
  case Isa::Avx2:
    return avx2(g);
  case Isa::Baseline:
    return baseline(g);
  }
}
