//===- Gemv.cpp - a few rows times a quantized weight (decoding) ----------===//
//
// y[m][n] = sum_k x[m][k] W[n][k] for up to kGemvRows rows of x — a token
// being decoded — and a quantized weight W [N, K] read as a linear layer
// reads it (transpose_b), for int4 and NF4 (int8 runs on integers:
// QuantMatmul.cpp). Such products are bound by the bytes of the weight, so
// the codes are decoded in registers and never written out:
//
//   nf4   32 bytes = 64 codes per step: the high nibbles (even elements)
//         and the low ones (odd) index the 16 levels in a register
//         (vpermps), multiplied with x split into even and odd elements
//         once per call; each block's sum is scaled by its absmax.
//   int4  as nf4, the codes themselves the values; per group scale *
//         (sum q x - zero * sum x), the groups' sums of x found once.
//
// AVX-512 and AVX2 paths (runtime/attention/BlockGemm.h picks the ISA);
// weights these do not cover (NF4 blocks or int4 groups that straddle rows
// or vectors) go
// through the tiled kernel of QuantMatmul.cpp.
//
//===----------------------------------------------------------------------===//
#include "runtime/quant/Gemv.h"
#include "runtime/quant/Formats.h"

#include <immintrin.h>

#include <algorithm>
#include <vector>

// The vector helpers take and return vector types; they are only inlined
// into the per-ISA entry points.
#pragma GCC diagnostic ignored "-Wpsabi"

using namespace kiln::runtime;
using namespace kiln::runtime::quant;
using attention::Isa;

namespace {

#define KILN_AVX512 __attribute__((target("avx512f,avx512bw,fma")))
#define KILN_AVX2 __attribute__((target("avx2,fma")))

// --- AVX-512 ----------------------------------------------------------------

KILN_AVX512 inline float sum512(__m512 v) { return _mm512_reduce_add_ps(v); }

/// One row of NF4 codes (K values, K a multiple of 64, blocks of `block`
/// that start at the row) against M rows of x split into even and odd
/// elements (xe, xo: [M][K/2]).
template <int M>
KILN_AVX512 void nf4Row512(const uint8_t *codes, const float *scales,
                           int64_t K, int64_t block, const float *xe,
                           const float *xo, float *out) {
  const __m512 table = _mm512_loadu_ps(kNf4Levels.data());
  const __m512i low = _mm512_set1_epi32(0x0f);
  __m512 total[M], part[M];
  for (int64_t m = 0; m < M; ++m)
    total[m] = _mm512_setzero_ps();
  for (int64_t k0 = 0; k0 < K; k0 += block) {
    for (int64_t m = 0; m < M; ++m)
      part[m] = _mm512_setzero_ps();
    for (int64_t k = k0; k < k0 + block; k += 32) {
      __m512i b = _mm512_cvtepu8_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i *>(codes + k / 2)));
      __m512 even = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), table);
      __m512 odd = _mm512_permutexvar_ps(_mm512_and_si512(b, low), table);
      for (int64_t m = 0; m < M; ++m) {
        const float *e = xe + m * (K / 2) + k / 2, *o = xo + m * (K / 2) + k / 2;
        part[m] = _mm512_fmadd_ps(even, _mm512_loadu_ps(e), part[m]);
        part[m] = _mm512_fmadd_ps(odd, _mm512_loadu_ps(o), part[m]);
      }
    }
    __m512 s = _mm512_set1_ps(scales[k0 / block]);
    for (int64_t m = 0; m < M; ++m)
      total[m] = _mm512_fmadd_ps(part[m], s, total[m]);
  }
  for (int64_t m = 0; m < M; ++m)
    out[m] = sum512(total[m]);
}

/// One row of int4 codes (groups of G, a multiple of 32, tiling the row):
/// sum_g scale_g * (sum_k q_k x_k - zero_g * sum_k x_k), with the groups'
/// sums of x precomputed (xsum: [M][K/G]).
template <int M>
KILN_AVX512 void int4Row512(const uint8_t *codes, const float *scales,
                            const float *zeros, int64_t K, int64_t G,
                            const float *xe, const float *xo,
                            const float *xsum, float *out) {
  const __m512i low = _mm512_set1_epi32(0x0f);
  float total[M] = {};
  for (int64_t k0 = 0, g = 0; k0 < K; k0 += G, ++g) {
    __m512 part[M];
    for (int m = 0; m < M; ++m)
      part[m] = _mm512_setzero_ps();
    for (int64_t k = k0; k < k0 + G; k += 32) {
      __m512i b = _mm512_cvtepu8_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i *>(codes + k / 2)));
      __m512 even = _mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4));
      __m512 odd = _mm512_cvtepi32_ps(_mm512_and_si512(b, low));
      for (int m = 0; m < M; ++m) {
        const float *e = xe + m * (K / 2) + k / 2, *o = xo + m * (K / 2) + k / 2;
        part[m] = _mm512_fmadd_ps(even, _mm512_loadu_ps(e), part[m]);
        part[m] = _mm512_fmadd_ps(odd, _mm512_loadu_ps(o), part[m]);
      }
    }
    for (int m = 0; m < M; ++m)
      total[m] += scales[g] * (sum512(part[m]) - zeros[g] * xsum[m * (K / G) + g]);
  }
  for (int m = 0; m < M; ++m)
    out[m] = total[m];
}

/// Rows [r0, r1) of W decoded to f32 (whole rows, the layouts gemv()
/// covers): the codes' values in order, scaled, stored at out + (r - r0) *
/// ldo.
KILN_AVX512 void decode512(const QuantView &w, int64_t r0, int64_t r1,
                           float *out, int64_t ldo) {
  const int64_t K = w.cols;
  const __m512 table = _mm512_loadu_ps(kNf4Levels.data());
  const __m512i low = _mm512_set1_epi32(0x0f);
  // Lane i of `even` is element 2i, of `odd` element 2i + 1.
  const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5,
                                          21, 6, 22, 7, 23),
                second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28,
                                           13, 29, 14, 30, 15, 31);
  for (int64_t r = r0; r < r1; ++r) {
    float *o = out + (r - r0) * ldo;
    const uint8_t *codes = w.codes + r * K / 2;
    for (int64_t k = 0; k < K; k += 32) {
      __m512i b = _mm512_cvtepu8_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i *>(codes + k / 2)));
      __m512i hi = _mm512_srli_epi32(b, 4), lo = _mm512_and_si512(b, low);
      __m512 even, odd;
      if (w.format == Format::NF4) {
        __m512 s = _mm512_set1_ps(w.scales[(r * K + k) / w.block]);
        even = _mm512_mul_ps(_mm512_permutexvar_ps(hi, table), s);
        odd = _mm512_mul_ps(_mm512_permutexvar_ps(lo, table), s);
      } else {
        int64_t g = r * (K / w.block) + k / w.block;
        __m512 s = _mm512_set1_ps(w.scales[g]), z = _mm512_set1_ps(w.zeros[g]);
        even = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(hi), z), s);
        odd = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(lo), z), s);
      }
      _mm512_storeu_ps(o + k, _mm512_permutex2var_ps(even, first, odd));
      _mm512_storeu_ps(o + k + 16, _mm512_permutex2var_ps(even, second, odd));
    }
  }
}

// --- AVX2 -------------------------------------------------------------------

KILN_AVX2 inline float sum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

/// The levels of eight 4-bit codes: two 8-entry permutes, chosen by bit 3.
KILN_AVX2 inline __m256 lookup256(__m256i idx, __m256 lo, __m256 hi) {
  __m256 a = _mm256_permutevar8x32_ps(lo, idx),
         b = _mm256_permutevar8x32_ps(hi, idx);
  __m256 upper = _mm256_castsi256_ps(
      _mm256_cmpgt_epi32(idx, _mm256_set1_epi32(7)));
  return _mm256_blendv_ps(a, b, upper);
}

template <int M>
KILN_AVX2 void nf4Row256(const uint8_t *codes, const float *scales, int64_t K,
                         int64_t block, const float *xe, const float *xo,
                         float *out) {
  const __m256 lo = _mm256_loadu_ps(kNf4Levels.data()),
               hi = _mm256_loadu_ps(kNf4Levels.data() + 8);
  const __m256i low = _mm256_set1_epi32(0x0f);
  __m256 total[M], part[M];
  for (int64_t m = 0; m < M; ++m)
    total[m] = _mm256_setzero_ps();
  for (int64_t k0 = 0; k0 < K; k0 += block) {
    for (int64_t m = 0; m < M; ++m)
      part[m] = _mm256_setzero_ps();
    for (int64_t k = k0; k < k0 + block; k += 16) {
      __m256i b = _mm256_cvtepu8_epi32(
          _mm_loadl_epi64(reinterpret_cast<const __m128i *>(codes + k / 2)));
      __m256 even = lookup256(_mm256_srli_epi32(b, 4), lo, hi);
      __m256 odd = lookup256(_mm256_and_si256(b, low), lo, hi);
      for (int64_t m = 0; m < M; ++m) {
        const float *e = xe + m * (K / 2) + k / 2, *o = xo + m * (K / 2) + k / 2;
        part[m] = _mm256_fmadd_ps(even, _mm256_loadu_ps(e), part[m]);
        part[m] = _mm256_fmadd_ps(odd, _mm256_loadu_ps(o), part[m]);
      }
    }
    __m256 s = _mm256_set1_ps(scales[k0 / block]);
    for (int64_t m = 0; m < M; ++m)
      total[m] = _mm256_fmadd_ps(part[m], s, total[m]);
  }
  for (int64_t m = 0; m < M; ++m)
    out[m] = sum256(total[m]);
}

template <int M>
KILN_AVX2 void int4Row256(const uint8_t *codes, const float *scales,
                          const float *zeros, int64_t K, int64_t G,
                          const float *xe, const float *xo, const float *xsum,
                          float *out) {
  const __m256i low = _mm256_set1_epi32(0x0f);
  float total[M] = {};
  for (int64_t k0 = 0, g = 0; k0 < K; k0 += G, ++g) {
    __m256 part[M];
    for (int m = 0; m < M; ++m)
      part[m] = _mm256_setzero_ps();
    for (int64_t k = k0; k < k0 + G; k += 16) {
      __m256i b = _mm256_cvtepu8_epi32(
          _mm_loadl_epi64(reinterpret_cast<const __m128i *>(codes + k / 2)));
      __m256 even = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
      __m256 odd = _mm256_cvtepi32_ps(_mm256_and_si256(b, low));
      for (int m = 0; m < M; ++m) {
        const float *e = xe + m * (K / 2) + k / 2, *o = xo + m * (K / 2) + k / 2;
        part[m] = _mm256_fmadd_ps(even, _mm256_loadu_ps(e), part[m]);
        part[m] = _mm256_fmadd_ps(odd, _mm256_loadu_ps(o), part[m]);
      }
    }
    for (int m = 0; m < M; ++m)
      total[m] += scales[g] * (sum256(part[m]) - zeros[g] * xsum[m * (K / G) + g]);
  }
  for (int m = 0; m < M; ++m)
    out[m] = total[m];
}

KILN_AVX2 void decode256(const QuantView &w, int64_t r0, int64_t r1, float *out,
                         int64_t ldo) {
  const int64_t K = w.cols;
  const __m256 lo8 = _mm256_loadu_ps(kNf4Levels.data()),
               hi8 = _mm256_loadu_ps(kNf4Levels.data() + 8);
  const __m256i low = _mm256_set1_epi32(0x0f);
  for (int64_t r = r0; r < r1; ++r) {
    float *o = out + (r - r0) * ldo;
    const uint8_t *codes = w.codes + r * K / 2;
    for (int64_t k = 0; k < K; k += 16) {
      __m256i b = _mm256_cvtepu8_epi32(
          _mm_loadl_epi64(reinterpret_cast<const __m128i *>(codes + k / 2)));
      __m256i hi = _mm256_srli_epi32(b, 4), lo = _mm256_and_si256(b, low);
      __m256 even, odd;
      if (w.format == Format::NF4) {
        __m256 s = _mm256_set1_ps(w.scales[(r * K + k) / w.block]);
        even = _mm256_mul_ps(lookup256(hi, lo8, hi8), s);
        odd = _mm256_mul_ps(lookup256(lo, lo8, hi8), s);
      } else {
        int64_t g = r * (K / w.block) + k / w.block;
        __m256 s = _mm256_set1_ps(w.scales[g]), z = _mm256_set1_ps(w.zeros[g]);
        even = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(hi), z), s);
        odd = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(lo), z), s);
      }
      // e0 o0 e1 o1 | e4 o4 e5 o5 and e2 o2 e3 o3 | e6 o6 e7 o7, then the
      // halves in order.
      __m256 a = _mm256_unpacklo_ps(even, odd),
             c = _mm256_unpackhi_ps(even, odd);
      _mm256_storeu_ps(o + k, _mm256_permute2f128_ps(a, c, 0x20));
      _mm256_storeu_ps(o + k + 8, _mm256_permute2f128_ps(a, c, 0x31));
    }
  }
}

} // namespace

namespace {

/// Every row of W against M rows of x (M known at compile time, so the
/// accumulators stay in registers).
template <int M>
void rows(Isa isa, const QuantView &w, const float *x, int64_t ldx,
          const float *xe, const float *xo, const float *xsum, float *y,
          int64_t ldy) {
  const int64_t N = w.rows, K = w.cols;
  const bool wide = isa == Isa::Avx512;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    float out[M];
    if (w.format == Format::Int4) {
      const int64_t groups = K / w.block;
      const uint8_t *codes = w.codes + n * K / 2;
      const float *scales = w.scales + n * groups,
                  *zeros = w.zeros + n * groups;
      if (wide)
        int4Row512<M>(codes, scales, zeros, K, w.block, xe, xo, xsum, out);
      else
        int4Row256<M>(codes, scales, zeros, K, w.block, xe, xo, xsum, out);
    } else {
      const uint8_t *codes = w.codes + n * K / 2;
      const float *scales = w.scales + n * K / w.block;
      if (wide)
        nf4Row512<M>(codes, scales, K, w.block, xe, xo, out);
      else
        nf4Row256<M>(codes, scales, K, w.block, xe, xo, out);
    }
    for (int m = 0; m < M; ++m)
      y[m * ldy + n] = out[m];
  }
}

} // namespace

bool kiln::runtime::quant::gemvCovers(Isa isa, const QuantView &w,
                                      int64_t M) {
  if (isa == Isa::Baseline || M < 1 || M > kGemvRows)
    return false;
  switch (w.format) {
  case Format::Int8:
    return false; // QuantMatmul.cpp's integer path (oneDNN s8 x s8)
  case Format::NF4:
    // Whole blocks per row, and whole vectors of codes per block.
    return w.cols % w.block == 0 && w.block % 64 == 0;
  case Format::Int4:
    // Whole groups of whole vectors (rows then start on a byte too).
    return w.cols % w.block == 0 && w.block % 32 == 0;
  }
  return false;
}

void kiln::runtime::quant::gemv(Isa isa, const QuantView &w, int64_t M,
                                const float *x, int64_t ldx, float *y,
                                int64_t ldy) {
  const int64_t N = w.rows, K = w.cols;
  // int4 and NF4 pair codes in bytes: x's even and odd elements, once per
  // call; int4 also each group's sum of x.
  std::vector<float> xe(static_cast<size_t>(M * K / 2)), xo(xe.size()), xsum;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K / 2; ++k) {
      xe[m * (K / 2) + k] = x[m * ldx + 2 * k];
      xo[m * (K / 2) + k] = x[m * ldx + 2 * k + 1];
    }
  if (w.format == Format::Int4) {
    int64_t groups = K / w.block;
    xsum.assign(static_cast<size_t>(M * groups), 0.0f);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k)
        xsum[m * groups + k / w.block] += x[m * ldx + k];
  }
  switch (M) {
  case 1:
    return rows<1>(isa, w, x, ldx, xe.data(), xo.data(), xsum.data(), y,
                   ldy);
  case 2:
    return rows<2>(isa, w, x, ldx, xe.data(), xo.data(), xsum.data(), y,
                   ldy);
  case 3:
    return rows<3>(isa, w, x, ldx, xe.data(), xo.data(), xsum.data(), y,
                   ldy);
  default:
    return rows<4>(isa, w, x, ldx, xe.data(), xo.data(), xsum.data(), y,
                   ldy);
  }
}

bool kiln::runtime::quant::decodeRows(Isa isa, const QuantView &w, int64_t r0,
                                      int64_t r1, float *out, int64_t ldo) {
  if (!gemvCovers(isa, w, 1))
    return false;
  if (isa == Isa::Avx512)
    decode512(w, r0, r1, out, ldo);
  else
    decode256(w, r0, r1, out, ldo);
  return true;
}
