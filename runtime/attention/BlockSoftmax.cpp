//===- BlockSoftmax.cpp - the softmax steps of blocked attention ----------===//
#include "runtime/attention/BlockSoftmax.h"
#include "runtime/Vector.h"

#include <immintrin.h>

// vexpv<V> takes and returns vector types; it is only ever inlined into the
// per-ISA entry points, so the ABI note GCC gives for it does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

#include <algorithm>
#include <cmath>

using namespace kiln::runtime;
using namespace kiln::runtime::attention;

namespace {

constexpr int64_t kCols = 64;

// --- portable ---------------------------------------------------------------

void onlineSoftmaxPortable(int64_t rows, int64_t Dv, float *s, float *m,
                           float *l, float *acc) {
  for (int64_t i = 0; i < rows; ++i) {
    float *si = s + i * kCols;
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t j = 0; j < kCols; ++j)
      mx = std::max(mx, si[j]);
    float mnew = std::max(m[i], mx);
    if (mnew == -INFINITY) { // nothing visible yet
#pragma omp simd
      for (int64_t j = 0; j < kCols; ++j)
        si[j] = 0.0f;
      continue;
    }
    float alpha = vexp(m[i] - mnew), sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < kCols; ++j) {
      si[j] = vexp(si[j] - mnew);
      sum += si[j];
    }
    l[i] = l[i] * alpha + sum;
    m[i] = mnew;
    float *ai = acc + i * Dv;
#pragma omp simd
    for (int64_t d = 0; d < Dv; ++d)
      ai[d] *= alpha;
  }
}

void probabilitiesPortable(int64_t rows, float scale, const float *s,
                           const float *dp, const float *lse, const float *D,
                           float *p, float *ds) {
  for (int64_t i = 0; i < rows; ++i) {
    float li = lse[i], di = D[i];
    const float *si = s + i * kCols, *dpi = dp + i * kCols;
    float *pi = p + i * kCols, *dsi = ds + i * kCols;
    if (li == -INFINITY) { // a row that sees nothing has no gradient
      std::fill(pi, pi + kCols, 0.0f);
      std::fill(dsi, dsi + kCols, 0.0f);
      continue;
    }
#pragma omp simd
    for (int64_t j = 0; j < kCols; ++j) {
      pi[j] = vexp(si[j] - li); // masked scores are -inf: p = 0
      dsi[j] = pi[j] * (dpi[j] - di) * scale;
    }
  }
}

// --- AVX-512 and AVX2: one algorithm over a vector type ---------------------

// The algorithm (BlockSoftmaxSimd.inc) is compiled once per ISA and inlined
// whole into that ISA's entry point, where these operations are inlined in
// turn.
#define KILN_AVX512 __attribute__((target("avx512f,fma"))) inline
#define KILN_AVX2 __attribute__((target("avx2,fma"))) inline

/// 16 lanes.
struct V512 {
  using T = __m512;
  static constexpr int kLanes = 16;
  static KILN_AVX512 T set1(float x) { return _mm512_set1_ps(x); }
  static KILN_AVX512 T zero() { return _mm512_setzero_ps(); }
  static KILN_AVX512 T load(const float *p) { return _mm512_loadu_ps(p); }
  static KILN_AVX512 void store(float *p, T v) { _mm512_storeu_ps(p, v); }
  static KILN_AVX512 T add(T a, T b) { return _mm512_add_ps(a, b); }
  static KILN_AVX512 T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static KILN_AVX512 T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static KILN_AVX512 T max(T a, T b) { return _mm512_max_ps(a, b); }
  static KILN_AVX512 T min(T a, T b) { return _mm512_min_ps(a, b); }
  static KILN_AVX512 T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static KILN_AVX512 T fnmadd(T a, T b, T c) {
    return _mm512_fnmadd_ps(a, b, c);
  }
  static KILN_AVX512 T floor(T x) {
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  }
  static KILN_AVX512 T pow2(T n) { // 2^n for integral n in range
    return _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
  }
  /// x < lo ? 0 : x > hi ? inf : y.
  static KILN_AVX512 T clamp(T x, T y, T lo, T hi) {
    y = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ), y);
    return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ),
                              _mm512_set1_ps(INFINITY));
  }
  static KILN_AVX512 float hmax(T v) { return _mm512_reduce_max_ps(v); }
  static KILN_AVX512 float hsum(T v) { return _mm512_reduce_add_ps(v); }
};

/// 8 lanes.
struct V256 {
  using T = __m256;
  static constexpr int kLanes = 8;
  static KILN_AVX2 T set1(float x) { return _mm256_set1_ps(x); }
  static KILN_AVX2 T zero() { return _mm256_setzero_ps(); }
  static KILN_AVX2 T load(const float *p) { return _mm256_loadu_ps(p); }
  static KILN_AVX2 void store(float *p, T v) { _mm256_storeu_ps(p, v); }
  static KILN_AVX2 T add(T a, T b) { return _mm256_add_ps(a, b); }
  static KILN_AVX2 T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static KILN_AVX2 T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static KILN_AVX2 T max(T a, T b) { return _mm256_max_ps(a, b); }
  static KILN_AVX2 T min(T a, T b) { return _mm256_min_ps(a, b); }
  static KILN_AVX2 T fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static KILN_AVX2 T fnmadd(T a, T b, T c) { return _mm256_fnmadd_ps(a, b, c); }
  static KILN_AVX2 T floor(T x) { return _mm256_floor_ps(x); }
  static KILN_AVX2 T pow2(T n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
  }
  static KILN_AVX2 T clamp(T x, T y, T lo, T hi) {
    y = _mm256_and_ps(_mm256_cmp_ps(x, lo, _CMP_GE_OQ), y);
    return _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY),
                            _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
  }
  static KILN_AVX2 float hmax(T v) {
    __m128 m =
        _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
  static KILN_AVX2 float hsum(T v) {
    __m128 m =
        _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    m = _mm_add_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
};

// The algorithm over a vector type, once per ISA.
namespace isa512 {
using V = V512;
#define KILN_SIMD __attribute__((target("avx512f,fma"), always_inline)) inline
#include "runtime/attention/BlockSoftmaxSimd.inc"
#undef KILN_SIMD
} // namespace isa512

namespace isa256 {
using V = V256;
#define KILN_SIMD __attribute__((target("avx2,fma"), always_inline)) inline
#include "runtime/attention/BlockSoftmaxSimd.inc"
#undef KILN_SIMD
} // namespace isa256

__attribute__((target("avx512f,fma"), flatten)) void
onlineSoftmax512(int64_t rows, int64_t Dv, float *s, float *m, float *l,
                 float *acc) {
  isa512::onlineSoftmaxV(rows, Dv, s, m, l, acc);
}

__attribute__((target("avx2,fma"), flatten)) void
onlineSoftmax256(int64_t rows, int64_t Dv, float *s, float *m, float *l,
                 float *acc) {
  isa256::onlineSoftmaxV(rows, Dv, s, m, l, acc);
}

__attribute__((target("avx512f,fma"), flatten)) void
probabilities512(int64_t rows, float scale, const float *s, const float *dp,
                 const float *lse, const float *D, float *p, float *ds) {
  isa512::probabilitiesV(rows, scale, s, dp, lse, D, p, ds);
}

__attribute__((target("avx2,fma"), flatten)) void
probabilities256(int64_t rows, float scale, const float *s, const float *dp,
                 const float *lse, const float *D, float *p, float *ds) {
  isa256::probabilitiesV(rows, scale, s, dp, lse, D, p, ds);
}

} // namespace

void kiln::runtime::attention::onlineSoftmax(Isa isa, int64_t rows, int64_t Dv,
                                             float *s, float *m, float *l,
                                             float *acc) {
  switch (isa) {
  case Isa::Avx512:
    return onlineSoftmax512(rows, Dv, s, m, l, acc);
  case Isa::Avx2:
    return onlineSoftmax256(rows, Dv, s, m, l, acc);
  case Isa::Baseline:
    return onlineSoftmaxPortable(rows, Dv, s, m, l, acc);
  }
}

void kiln::runtime::attention::probabilities(Isa isa, int64_t rows, float scale,
                                             const float *s, const float *dp,
                                             const float *lse, const float *D,
                                             float *p, float *ds) {
  switch (isa) {
  case Isa::Avx512:
    return probabilities512(rows, scale, s, dp, lse, D, p, ds);
  case Isa::Avx2:
    return probabilities256(rows, scale, s, dp, lse, D, p, ds);
  case Isa::Baseline:
    return probabilitiesPortable(rows, scale, s, dp, lse, D, p, ds);
  }
}
