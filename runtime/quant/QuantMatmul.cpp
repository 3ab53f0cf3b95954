//===- QuantMatmul.cpp - matmuls whose weight is quantized ----------------===//
//
// kiln.matmul and kiln.fused_matmul when the right-hand side is a quantized
// parameter (View::quant, runtime/quant/QuantView.h):
//
//   int8       y = x Wᵀ with an int8 W: each row of x (a token) is
//              quantized to int8 with its own scale (absmax / 127), oneDNN
//              multiplies s8 by s8 into s32 (VNNI where the CPU has it) and
//              the result is scaled back by the row's and the output
//              channel's scales. Every row count takes this path, so a
//              token's result does not depend on how many are decoded
//              together;
//   decoding   up to four rows of x times an int4 or NF4 weight decode the
//              codes in registers (runtime/quant/Gemv.h);
//   fast       tiles of the weight are dequantized into a per-thread buffer
//              that stays in cache and multiplied with oneDNN's sgemm; the
//              f32 weight is never whole in memory. y = x Wᵀ (a linear
//              layer, W [N, K]) runs over tiles of W's rows, one tile per
//              task; y = x W (the input's gradient) over column chunks of
//              the output, each summing row tiles of W.
//   reference  dequantizes the whole weight (and, where the int8 path
//              quantizes x, x's rows as that path does), then runs the dense
//              reference kernel on them: the oracle the fast paths are
//              tested against.
//
// The epilogue of a fused matmul is the dense kernel's: act(scale * (x W +
// bias)) + residual.
//
//===----------------------------------------------------------------------===//
#include "runtime/Kernels.h"
#include "runtime/Vector.h"
#include "runtime/kart_generated.h"
#include "runtime/quant/Formats.h"
#include "runtime/quant/Gemv.h"
#include "runtime/quant/QuantView.h"

#include <dnnl.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

using namespace kiln;
using namespace kiln::runtime;
using Shape = std::vector<int64_t>;

void kiln::runtime::quant::dequantizeRect(const QuantView &w, int64_t r0,
                                          int64_t r1, int64_t c0, int64_t c1,
                                          float *out, int64_t ldo) {
  switch (w.format) {
  case Format::Int8:
    for (int64_t r = r0; r < r1; ++r) {
      const int8_t *q = reinterpret_cast<const int8_t *>(w.codes) + r * w.cols;
      float s = w.scales[r];
      float *o = out + (r - r0) * ldo - c0;
      for (int64_t c = c0; c < c1; ++c)
        o[c] = q[c] * s;
    }
    return;
  case Format::Int4: {
    int64_t groups = (w.cols + w.block - 1) / w.block,
            rowBytes = (w.cols + 1) / 2;
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t *q = w.codes + r * rowBytes;
      const float *s = w.scales + r * groups, *z = w.zeros + r * groups;
      float *o = out + (r - r0) * ldo - c0;
      for (int64_t c = c0; c < c1; ++c) {
        uint8_t code = (c % 2 == 0) ? q[c / 2] >> 4 : q[c / 2] & 0x0f;
        int64_t g = c / w.block;
        o[c] = (static_cast<float>(code) - z[g]) * s[g];
      }
    }
    return;
  }
  case Format::NF4:
    for (int64_t r = r0; r < r1; ++r) {
      float *o = out + (r - r0) * ldo - c0;
      for (int64_t c = c0; c < c1; ++c) {
        int64_t i = r * w.cols + c;
        uint8_t code =
            (i % 2 == 0) ? w.codes[i / 2] >> 4 : w.codes[i / 2] & 0x0f;
        o[c] = kNf4Levels[code] * w.scales[i / w.block];
      }
    }
    return;
  }
}

namespace {

struct Product {
  const float *x; // [M, K] rows (or [K, M] with transposeA)
  bool transposeA, transposeB;
  int64_t M, N, K;
  const quant::QuantView *w;
  float *y; // [M, N]
};

/// The operands of a matmul with a quantized right-hand side, checked: the
/// left-hand side's batch dimensions fold into its rows (without
/// transpose_a), the weight is a plain matrix.
Status productOf(KernelContext &c, bool transposeA, bool transposeB,
                 Product &p) {
  const Shape &a = *c.in[0].shape, &o = *c.out[0].shape;
  p.w = c.in[1].quant;
  p.transposeA = transposeA;
  p.transposeB = transposeB;
  p.N = o.back();
  p.K = transposeB ? p.w->cols : p.w->rows;
  if ((transposeB ? p.w->rows : p.w->cols) != p.N)
    return Status::error("the quantized weight " + p.w->spec + " is " +
                         std::to_string(p.w->rows) + " x " +
                         std::to_string(p.w->cols) +
                         ", which does not give the result's " +
                         std::to_string(p.N) + " columns");
  if (transposeA && a.size() != 2)
    return Status::error("a transposed left-hand side of rank " +
                         std::to_string(a.size()) + " with a quantized weight");
  p.M = c.out[0].numel() / std::max<int64_t>(p.N, 1);
  p.x = c.in[0].as<float>();
  p.y = c.out[0].as<float>();
  return Status::ok();
}

/// A matmul kernel's transpose flags, fused or not.
void transposes(const kart::Kernel &k, bool &ta, bool &tb) {
  if (k.op() == kart::Op::FusedMatmul) {
    ta = k.attrs_as_FusedMatmulAttrs()->transpose_a();
    tb = k.attrs_as_FusedMatmulAttrs()->transpose_b();
  } else {
    ta = k.attrs_as_MatmulAttrs()->transpose_a();
    tb = k.attrs_as_MatmulAttrs()->transpose_b();
  }
}

/// Whether the product quantizes its activations: an int8 weight in a
/// linear layer (y = x Wᵀ). The input's gradient (y = x W) stays in f32.
bool quantizesActivations(quant::Format format, bool transposeA,
                          bool transposeB) {
  return format == quant::Format::Int8 && transposeB && !transposeA;
}

/// Whether oneDNN's integer GEMM runs on VNNI here (vpdpbusd sums
/// products in s32 exactly). Without it, it sums pairs of u8 x s8 products
/// in saturating s16 (vpmaddubsw), which full-range codes overflow.
bool exactIntegerGemm() {
  switch (dnnl_get_effective_cpu_isa()) {
  case dnnl_cpu_isa_avx512_core_vnni:
  case dnnl_cpu_isa_avx512_core_bf16:
  case dnnl_cpu_isa_avx512_core_amx:
  case dnnl_cpu_isa_avx2_vnni:
    return true;
  default:
    return false;
  }
}

/// The largest activation code: 127 with VNNI; otherwise 63, so codes
/// offset by 64 lie in [1, 127] and a pair of products stays below 2^15.
int activationLevels() { return exactIntegerGemm() ? 127 : 63; }

/// y = x Wᵀ for an int8 W through oneDNN's integer GEMM: s8 x s8 with
/// VNNI, else 7-bit activations offset into u8 (u8 x s8, the offset taken
/// back out by oneDNN's zero point).
void multiplyInt8(const Product &p) {
  // Left uninitialized: every element is written before it is read.
  std::unique_ptr<int8_t[]> qx(new int8_t[p.M * p.K]);
  std::unique_ptr<float[]> sx(new float[p.M]);
  std::unique_ptr<int32_t[]> acc(new int32_t[p.M * p.N]);
  const int levels = activationLevels();
  quant::quantizeActivations(p.x, p.M, p.K, levels, qx.get(), sx.get());
  const int32_t noOffset = 0;
  const int8_t *w = reinterpret_cast<const int8_t *>(p.w->codes);
  if (levels == 127) {
    dnnl_gemm_s8s8s32('N', 'T', 'F', p.M, p.N, p.K, 1.0f, qx.get(), p.K, 0, w,
                      p.K, 0, 0.0f, acc.get(), p.N, &noOffset);
  } else {
    std::unique_ptr<uint8_t[]> ux(new uint8_t[p.M * p.K]);
#pragma omp parallel for simd if (p.M * p.K > 65536)
    for (int64_t i = 0; i < p.M * p.K; ++i)
      ux[i] = static_cast<uint8_t>(qx[i] + 64);
    dnnl_gemm_u8s8s32('N', 'T', 'F', p.M, p.N, p.K, 1.0f, ux.get(), p.K, 64, w,
                      p.K, 0, 0.0f, acc.get(), p.N, &noOffset);
  }
  const float *sw = p.w->scales;
#pragma omp parallel for schedule(static) if (p.M * p.N > 65536)
  for (int64_t m = 0; m < p.M; ++m) {
    const int32_t *a = acc.get() + m * p.N;
    float *y = p.y + m * p.N, s = sx[m];
#pragma omp simd
    for (int64_t n = 0; n < p.N; ++n)
      y[n] = static_cast<float>(a[n]) * (s * sw[n]);
  }
}

/// Row tile of W dequantized at a time: 64 rows of up to 4096 values is
/// 1 MiB at most, and usually far less (768 columns: 192 KiB).
constexpr int64_t kTileRows = 64, kTileCols = 256;

void multiply(const Product &p) {
  if (quantizesActivations(p.w->format, p.transposeA, p.transposeB)) {
    multiplyInt8(p);
    return;
  }
  // A token or a few being decoded: codes decoded in registers.
  attention::Isa isa = attention::bestIsa();
  if (p.transposeB && !p.transposeA && quant::gemvCovers(isa, *p.w, p.M)) {
    quant::gemv(isa, *p.w, p.M, p.x, p.K, p.y, p.N);
    return;
  }
  const int64_t lda = p.transposeA ? p.M : p.K;
  const char ta = p.transposeA ? 'T' : 'N';
  if (p.transposeB) {
    // y[:, n0:n1] = x · W[n0:n1, :]ᵀ, one task per tile of W's rows.
    int64_t tiles = (p.N + kTileRows - 1) / kTileRows;
#pragma omp parallel
    {
      std::vector<float> tile(static_cast<size_t>(kTileRows * p.K));
#pragma omp for schedule(dynamic)
      for (int64_t t = 0; t < tiles; ++t) {
        int64_t n0 = t * kTileRows, n1 = std::min(p.N, n0 + kTileRows);
        if (!quant::decodeRows(isa, *p.w, n0, n1, tile.data(), p.K))
          quant::dequantizeRect(*p.w, n0, n1, 0, p.K, tile.data(), p.K);
        dnnl_sgemm(ta, 'T', p.M, n1 - n0, p.K, 1.0f, p.x, lda, tile.data(), p.K,
                   0.0f, p.y + n0, p.N);
      }
    }
    return;
  }
  // y[:, c0:c1] = sum over row tiles r of x[:, r0:r1] · W[r0:r1, c0:c1].
  int64_t chunks = (p.N + kTileCols - 1) / kTileCols;
#pragma omp parallel
  {
    std::vector<float> tile(static_cast<size_t>(kTileRows * kTileCols));
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < chunks; ++t) {
      int64_t c0 = t * kTileCols, c1 = std::min(p.N, c0 + kTileCols);
      for (int64_t r0 = 0; r0 < p.K; r0 += kTileRows) {
        int64_t r1 = std::min(p.K, r0 + kTileRows);
        quant::dequantizeRect(*p.w, r0, r1, c0, c1, tile.data(), c1 - c0);
        const float *xa = p.transposeA ? p.x + r0 * p.M : p.x + r0;
        dnnl_sgemm(ta, 'N', p.M, c1 - c0, r1 - r0, 1.0f, xa, lda, tile.data(),
                   c1 - c0, r0 == 0 ? 0.0f : 1.0f, p.y + c0, p.N);
      }
    }
  }
}

/// y = act(scale * (y + bias)) + residual over n values starting at
/// element `at` of the [M, N] result, vectorized: GELU's tanh form as
/// x sigmoid(2u) (the same function), through the vectorizable vexp; the
/// erf form stays scalar.
__attribute__((target_clones("arch=x86-64-v3", "default"))) void
epilogueRange(float *y, const float *bias, const float *res, int64_t at,
              int64_t n, int64_t N, float scale, kart::Activation act) {
  for (int64_t i = at; i < at + n;) {
    // One row at a time, so the bias lines up with the columns.
    int64_t col = i % N, len = std::min(N - col, at + n - i);
    float *yi = y + i;
    const float *bi = bias ? bias + col : nullptr;
#pragma omp simd
    for (int64_t j = 0; j < len; ++j)
      yi[j] = (yi[j] + (bi ? bi[j] : 0.0f)) * scale;
    switch (act) {
    case kart::Activation::Relu:
#pragma omp simd
      for (int64_t j = 0; j < len; ++j)
        yi[j] = yi[j] > 0 ? yi[j] : 0.0f;
      break;
    case kart::Activation::GeluTanh:
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) {
        float x = yi[j];
        float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
        yi[j] = x / (1.0f + vexp(-2.0f * u));
      }
      break;
    case kart::Activation::Gelu:
      for (int64_t j = 0; j < len; ++j)
        yi[j] = gelu(yi[j], false);
      break;
    case kart::Activation::Silu:
#pragma omp simd
      for (int64_t j = 0; j < len; ++j)
        yi[j] = yi[j] / (1.0f + vexp(-yi[j]));
      break;
    default:
      break;
    }
    if (res) {
      const float *ri = res + i;
#pragma omp simd
      for (int64_t j = 0; j < len; ++j)
        yi[j] += ri[j];
    }
    i += len;
  }
}

void epilogue(KernelContext &c, const Product &p) {
  const kart::FusedMatmulAttrs *attrs = c.kernel.attrs_as_FusedMatmulAttrs();
  const float *bias = c.in[2].as<float>(), *res = c.in[3].as<float>();
  float scale = static_cast<float>(attrs->scale());
  kart::Activation act = attrs->activation();
  int64_t total = p.M * p.N, chunk = 4096;
#pragma omp parallel for schedule(static)
  for (int64_t at = 0; at < total; at += chunk)
    epilogueRange(p.y, bias, res, at, std::min(chunk, total - at), p.N, scale,
                  act);
}

} // namespace

Status kiln::runtime::quantizedMatmul(KernelContext &c) {
  bool fused = c.kernel.op() == kart::Op::FusedMatmul;
  if (fused && c.kernel.attrs_as_FusedMatmulAttrs()->reduce_batch())
    return Status::error("a batch-reducing matmul cannot read a quantized "
                         "weight");
  bool ta, tb;
  transposes(c.kernel, ta, tb);
  Product p;
  if (Status s = productOf(c, ta, tb, p); !s)
    return s;
  multiply(p);
  if (fused)
    epilogue(c, p);
  return Status::ok();
}

Status
kiln::runtime::quantizedMatmulReference(KernelContext &c,
                                        Status (*dense)(KernelContext &)) {
  const quant::QuantView &w = *c.in[1].quant;
  std::vector<float> full(static_cast<size_t>(w.rows * w.cols));
  quant::dequantizeRect(w, 0, w.rows, 0, w.cols, full.data(), w.cols);
  KernelContext d = c;
  d.in[1].data = full.data();
  d.in[1].quant = nullptr;
  bool ta, tb;
  transposes(c.kernel, ta, tb);
  std::vector<float> x;
  if (quantizesActivations(w.format, ta, tb) && w.cols > 0) {
    // x as the int8 path sees it: its rows' codes times their scales.
    int64_t rows = c.in[0].numel() / w.cols;
    std::vector<int8_t> q(static_cast<size_t>(rows * w.cols));
    std::vector<float> scales(static_cast<size_t>(rows));
    quant::quantizeActivations(c.in[0].as<float>(), rows, w.cols,
                               activationLevels(), q.data(), scales.data());
    x.resize(q.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < w.cols; ++k)
        x[r * w.cols + k] = q[r * w.cols + k] * scales[r];
    d.in[0].data = x.data();
  }
  return dense(d);
}
