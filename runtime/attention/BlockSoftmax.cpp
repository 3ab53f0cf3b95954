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

// The generic code below is inlined whole into one entry point per ISA
// (`flatten`), where these operations are inlined in turn.
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

/// vexp (runtime/Vector.h) on a vector: the same reduction and polynomial.
template <typename V> inline typename V::T vexpv(typename V::T x) {
  auto lo = V::set1(-87.33654475f), hi = V::set1(88.72283905f);
  auto c = V::min(V::max(x, lo), hi);
  auto n = V::floor(V::fmadd(c, V::set1(1.44269504088896341f), V::set1(0.5f)));
  auto r = V::fnmadd(n, V::set1(0.693359375f), c);
  r = V::fmadd(n, V::set1(2.12194440e-4f), r);
  auto p = V::set1(1.9875691500e-4f);
  p = V::fmadd(p, r, V::set1(1.3981999507e-3f));
  p = V::fmadd(p, r, V::set1(8.3334519073e-3f));
  p = V::fmadd(p, r, V::set1(4.1665795894e-2f));
  p = V::fmadd(p, r, V::set1(1.6666665459e-1f));
  p = V::fmadd(p, r, V::set1(5.0000001201e-1f));
  p = V::fmadd(V::mul(p, r), r, V::add(r, V::set1(1.0f)));
  return V::clamp(x, V::mul(p, V::pow2(n)), lo, hi);
}

template <typename V>
inline void onlineSoftmaxV(int64_t rows, int64_t Dv, float *s, float *m,
                           float *l, float *acc) {
  constexpr int kV = kCols / V::kLanes;
  for (int64_t i = 0; i < rows; ++i) {
    float *si = s + i * kCols;
    typename V::T v[kV];
    auto mx = V::set1(-INFINITY);
    for (int k = 0; k < kV; ++k) {
      v[k] = V::load(si + V::kLanes * k);
      mx = V::max(mx, v[k]);
    }
    float mnew = std::max(m[i], V::hmax(mx));
    if (mnew == -INFINITY) { // nothing visible yet
      for (int k = 0; k < kV; ++k)
        V::store(si + V::kLanes * k, V::zero());
      continue;
    }
    float alpha = vexp(m[i] - mnew);
    auto mv = V::set1(mnew), sum = V::zero();
    for (int k = 0; k < kV; ++k) {
      auto e = vexpv<V>(V::sub(v[k], mv));
      V::store(si + V::kLanes * k, e);
      sum = V::add(sum, e);
    }
    l[i] = l[i] * alpha + V::hsum(sum);
    m[i] = mnew;
    if (alpha != 1.0f) {
      float *ai = acc + i * Dv;
      auto av = V::set1(alpha);
      int64_t d = 0;
      for (; d + V::kLanes <= Dv; d += V::kLanes)
        V::store(ai + d, V::mul(V::load(ai + d), av));
      for (; d < Dv; ++d)
        ai[d] *= alpha;
    }
  }
}

template <typename V>
inline void probabilitiesV(int64_t rows, float scale, const float *s,
                           const float *dp, const float *lse, const float *D,
                           float *p, float *ds) {
  constexpr int kV = kCols / V::kLanes;
  auto sc = V::set1(scale);
  for (int64_t i = 0; i < rows; ++i) {
    const float *si = s + i * kCols, *dpi = dp + i * kCols;
    float *pi = p + i * kCols, *dsi = ds + i * kCols;
    if (lse[i] == -INFINITY) { // a row that sees nothing has no gradient
      for (int k = 0; k < kV; ++k) {
        V::store(pi + V::kLanes * k, V::zero());
        V::store(dsi + V::kLanes * k, V::zero());
      }
      continue;
    }
    auto li = V::set1(lse[i]), di = V::set1(D[i]);
    for (int k = 0; k < kV; ++k) {
      auto e = vexpv<V>(V::sub(V::load(si + V::kLanes * k), li));
      V::store(pi + V::kLanes * k, e);
      auto g = V::sub(V::load(dpi + V::kLanes * k), di);
      V::store(dsi + V::kLanes * k, V::mul(V::mul(e, g), sc));
    }
  }
}

__attribute__((target("avx512f,fma"), flatten)) void
onlineSoftmax512(int64_t rows, int64_t Dv, float *s, float *m, float *l,
                 float *acc) {
  onlineSoftmaxV<V512>(rows, Dv, s, m, l, acc);
}

__attribute__((target("avx2,fma"), flatten)) void
onlineSoftmax256(int64_t rows, int64_t Dv, float *s, float *m, float *l,
                 float *acc) {
  onlineSoftmaxV<V256>(rows, Dv, s, m, l, acc);
}

__attribute__((target("avx512f,fma"), flatten)) void
probabilities512(int64_t rows, float scale, const float *s, const float *dp,
                 const float *lse, const float *D, float *p, float *ds) {
  probabilitiesV<V512>(rows, scale, s, dp, lse, D, p, ds);
}

__attribute__((target("avx2,fma"), flatten)) void
probabilities256(int64_t rows, float scale, const float *s, const float *dp,
                 const float *lse, const float *D, float *p, float *ds) {
  probabilitiesV<V256>(rows, scale, s, dp, lse, D, p, ds);
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
