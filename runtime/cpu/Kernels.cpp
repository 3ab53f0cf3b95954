//===- Kernels.cpp - CPU reference kernels --------------------------------===//
//
// Kernels are written for clarity first: each is the naive reference that
// the fused, vectorized kernels of later work are checked against. Loops over
// independent rows use OpenMP, which oneDNN also uses, so the two share one
// thread pool.
//
//===----------------------------------------------------------------------===//
#include "runtime/Kernels.h"
#include "runtime/Random.h"
#include "runtime/Vector.h"
#include "runtime/attention/RelativeBucket.h"
#include "runtime/cpu/KernelUtil.h"
#include "runtime/quant/QuantView.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>

using namespace kiln;
using namespace kiln::runtime;
using namespace kiln::runtime::cpu;
using kart::Op;

//===----------------------------------------------------------------------===//
// Kernels
//===----------------------------------------------------------------------===//

namespace kiln::runtime::cpu::reference {

/// The naive batched matmul that the oneDNN primitive is checked against.
Status matmulReference(KernelContext &c) {
  const Shape &a = *c.in[0].shape, &b = *c.in[1].shape, &o = *c.out[0].shape;
  const kart::MatmulAttrs *attrs = c.kernel.attrs_as_MatmulAttrs();
  bool ta = attrs->transpose_a(), tb = attrs->transpose_b();
  size_t r = o.size();
  int64_t M = o[r - 2], N = o[r - 1];
  int64_t K = ta ? a[a.size() - 2] : a.back();
  Shape batch(o.begin(), o.end() - 2);
  std::vector<int64_t> sa = broadcastStrides(Shape(a.begin(), a.end() - 2),
                                             batch),
                       sb = broadcastStrides(Shape(b.begin(), b.end() - 2),
                                             batch);
  int64_t batches = c.out[0].numel() / std::max<int64_t>(M * N, 1);
  const float *pa = c.in[0].as<float>(), *pb = c.in[1].as<float>();
  float *po = c.out[0].as<float>();
#pragma omp parallel for
  for (int64_t bi = 0; bi < batches; ++bi) {
    int64_t rem = bi, oa = 0, ob = 0;
    for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {
      int64_t idx = rem % batch[d];
      rem /= batch[d];
      oa += idx * sa[d];
      ob += idx * sb[d];
    }
    const float *A = pa + oa * M * K, *Bm = pb + ob * K * N;
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k)
          acc += static_cast<double>(ta ? A[k * M + i] : A[i * K + k]) *
                 (tb ? Bm[j * K + k] : Bm[k * N + j]);
        po[(bi * M + i) * N + j] = static_cast<float>(acc);
      }
  }
  return Status::ok();
}

template <typename T, typename F>
void binaryLoop(const View &a, const View &b, const View &o, F f) {
  const Shape &os = *o.shape;
  std::vector<int64_t> sa = broadcastStrides(*a.shape, os),
                       sb = broadcastStrides(*b.shape, os);
  int64_t n = o.numel(), r = os.size();
  const T *pa = a.as<T>(), *pb = b.as<T>();
  T *po = o.as<T>();
  int64_t inner = r ? os[r - 1] : 1;
  int64_t rows = inner ? n / inner : 0;
#pragma omp parallel for if (n > 32768)
  for (int64_t row = 0; row < rows; ++row) {
    int64_t ia = 0, ib = 0, rem = row;
    for (int64_t d = r - 2; d >= 0; --d) {
      int64_t idx = rem % os[d];
      rem /= os[d];
      ia += idx * sa[d];
      ib += idx * sb[d];
    }
    int64_t ca = r ? sa[r - 1] : 0, cb = r ? sb[r - 1] : 0;
    T *out = po + row * inner;
    for (int64_t j = 0; j < inner; ++j)
      out[j] = f(pa[ia + j * ca], pb[ib + j * cb]);
  }
}

template <typename T> Status binaryTyped(KernelContext &c) {
  const View &a = c.in[0], &b = c.in[1], &o = c.out[0];
  switch (c.kernel.op()) {
  case Op::Add:
    binaryLoop<T>(a, b, o, [](T x, T y) { return x + y; });
    break;
  case Op::Sub:
    binaryLoop<T>(a, b, o, [](T x, T y) { return x - y; });
    break;
  case Op::Mul:
    binaryLoop<T>(a, b, o, [](T x, T y) { return x * y; });
    break;
  case Op::Div:
    binaryLoop<T>(a, b, o, [](T x, T y) { return x / y; });
    break;
  case Op::Max:
    binaryLoop<T>(a, b, o, [](T x, T y) { return std::max(x, y); });
    break;
  case Op::Min:
    binaryLoop<T>(a, b, o, [](T x, T y) { return std::min(x, y); });
    break;
  default:
    binaryLoop<T>(a, b, o, [](T x, T y) {
      return static_cast<T>(
          std::pow(static_cast<double>(x), static_cast<double>(y)));
    });
    break;
  }
  return Status::ok();
}

Status binary(KernelContext &c) {
  if (c.kernel.op() == Op::Div && c.in[0].dtype != DType::F32) {
    // Integer division by zero would be undefined behaviour.
    const View &b = c.in[1];
    for (int64_t i = 0; i < b.numel(); ++i)
      if ((b.dtype == DType::I32 ? b.as<int32_t>()[i] : b.as<int64_t>()[i]) ==
          0)
        return fail(c.kernel, "integer division by zero");
  }
  switch (c.in[0].dtype) {
  case DType::F32:
    return binaryTyped<float>(c);
  case DType::I32:
    return binaryTyped<int32_t>(c);
  case DType::I64:
    return binaryTyped<int64_t>(c);
  default:
    return fail(c.kernel, std::string("unsupported element type ") +
                              dtypeName(c.in[0].dtype));
  }
}

float gelu(float x, bool approx) {
  if (approx) {
    const float k = 0.7978845608028654f; // sqrt(2/pi)
    return 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
  }
  return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f));
}

Status unary(KernelContext &c) {
  const float *x = c.in[0].as<float>();
  float *y = c.out[0].as<float>();
  int64_t n = c.out[0].numel();
  Op op = c.kernel.op();
  bool approx =
      op == Op::Gelu && c.kernel.attrs_as_GeluAttrs()->approximation() ==
                            kart::GeluApproximation::Tanh;
#pragma omp parallel for if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i];
    switch (op) {
    case Op::Neg:
      v = -v;
      break;
    case Op::Exp:
      v = std::exp(v);
      break;
    case Op::Log:
      v = std::log(v);
      break;
    case Op::Sqrt:
      v = std::sqrt(v);
      break;
    case Op::Rsqrt:
      v = 1.0f / std::sqrt(v);
      break;
    case Op::Tanh:
      v = std::tanh(v);
      break;
    case Op::Sigmoid:
      v = 1.0f / (1.0f + std::exp(-v));
      break;
    case Op::Relu:
      v = v > 0 ? v : 0.0f;
      break;
    case Op::Silu:
      v = v / (1.0f + std::exp(-v));
      break;
    case Op::Gelu:
      v = gelu(v, approx);
      break;
    default:
      break;
    }
    y[i] = v;
  }
  return Status::ok();
}

Status cast(KernelContext &c) {
  const View &x = c.in[0], &y = c.out[0];
  int64_t n = y.numel();
  for (int64_t i = 0; i < n; ++i) {
    switch (y.dtype) {
    case DType::F32:
      y.as<float>()[i] = readAs<float>(x, i);
      break;
    case DType::F64:
      y.as<double>()[i] = readAs<double>(x, i);
      break;
    case DType::I32:
      y.as<int32_t>()[i] = readAs<int32_t>(x, i);
      break;
    case DType::I64:
      y.as<int64_t>()[i] = readAs<int64_t>(x, i);
      break;
    case DType::Bool:
      y.as<uint8_t>()[i] = readAs<double>(x, i) != 0;
      break;
    default:
      return fail(c.kernel, "unsupported element type");
    }
  }
  return Status::ok();
}

Status embedding(KernelContext &c) {
  const View &table = c.in[0], &ids = c.in[1];
  int64_t v = (*table.shape)[0], d = (*table.shape)[1], n = ids.numel();
  for (int64_t i = 0; i < n; ++i) {
    int64_t id = index(ids, i);
    if (id < 0 || id >= v)
      return fail(c.kernel, "index " + std::to_string(id) + " at position " +
                                std::to_string(i) + " is outside [0, " +
                                std::to_string(v) + ")");
    if (table.quant) // a quantized table: the row's values, dequantized
      quant::dequantizeRect(*table.quant, id, id + 1, 0, d,
                            c.out[0].as<float>() + i * d, d);
    else
      std::memcpy(c.out[0].as<float>() + i * d, table.as<float>() + id * d,
                  d * sizeof(float));
  }
  return Status::ok();
}

Status transpose(KernelContext &c) {
  const Shape &xs = *c.in[0].shape, &ys = *c.out[0].shape;
  size_t r = xs.size(), esz = dtypeSize(c.in[0].dtype);
  std::vector<int64_t> xst(r, 1);
  for (int i = static_cast<int>(r) - 2; i >= 0; --i)
    xst[i] = xst[i + 1] * xs[i + 1];
  std::vector<int64_t> src(r);
  for (size_t d = 0; d < r; ++d)
    src[d] = xst[c.kernel.attrs_as_TransposeAttrs()->perm()->Get(d)];
  int64_t n = c.out[0].numel();
  const char *x = static_cast<const char *>(c.in[0].data);
  char *y = static_cast<char *>(c.out[0].data);
#pragma omp parallel for if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    int64_t rem = i, off = 0;
    for (int64_t d = r - 1; d >= 0; --d) {
      off += (rem % ys[d]) * src[d];
      rem /= ys[d];
    }
    std::memcpy(y + i * esz, x + off * esz, esz);
  }
  return Status::ok();
}

/// Copies blocks between an outer/axis/inner decomposition (slice, concat,
/// split).
void copyAxis(const View &from, int64_t fromStart, const View &to,
              int64_t toStart, int64_t count, int64_t axis) {
  const Shape &fs = *from.shape, &ts = *to.shape;
  size_t esz = dtypeSize(from.dtype);
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d)
    outer *= fs[d];
  for (size_t d = axis + 1; d < fs.size(); ++d)
    inner *= fs[d];
  const char *src = static_cast<const char *>(from.data);
  char *dst = static_cast<char *>(to.data);
  for (int64_t o = 0; o < outer; ++o)
    std::memcpy(dst + ((o * ts[axis] + toStart) * inner) * esz,
                src + ((o * fs[axis] + fromStart) * inner) * esz,
                count * inner * esz);
}

/// Reduction over one contiguous block of axes, as [outer, R, inner] ->
/// [outer, inner]: rows are summed in a fixed order (deterministic), with
/// the inner dimension contiguous and vectorizable.
void reduceBlock(Op op, const float *x, float *y, int64_t outer, int64_t R,
                 int64_t inner) {
  bool isMax = op == Op::ReduceMax;
  float init = isMax ? -INFINITY : 0.0f;
  if (inner == 1) {
#pragma omp parallel for if (outer * R > 32768)
    for (int64_t o = 0; o < outer; ++o) {
      const float *xr = x + o * R;
      float acc = init;
      if (isMax)
        for (int64_t r = 0; r < R; ++r)
          acc = std::max(acc, xr[r]);
      else
        for (int64_t r = 0; r < R; ++r)
          acc += xr[r];
      y[o] = acc;
    }
  } else {
    const int64_t chunk = 256;
    int64_t chunks = (inner + chunk - 1) / chunk;
#pragma omp parallel for collapse(2) if (outer * R * inner > 32768)
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t ci = 0; ci < chunks; ++ci) {
        int64_t i0 = ci * chunk, i1 = std::min(inner, i0 + chunk);
        float *yr = y + o * inner;
        for (int64_t i = i0; i < i1; ++i)
          yr[i] = init;
        for (int64_t r = 0; r < R; ++r) {
          const float *xr = x + (o * R + r) * inner;
          if (isMax)
            for (int64_t i = i0; i < i1; ++i)
              yr[i] = std::max(yr[i], xr[i]);
          else
            for (int64_t i = i0; i < i1; ++i)
              yr[i] += xr[i];
        }
      }
  }
  if (op == Op::ReduceMean)
    for (int64_t i = 0; i < outer * inner; ++i)
      y[i] /= static_cast<float>(R);
}

Status reduce(KernelContext &c) {
  const Shape &xs = *c.in[0].shape;
  const auto &axes = *c.kernel.attrs_as_ReduceAttrs()->axes();
  std::vector<bool> red(xs.size(), false);
  for (int64_t a : axes)
    red[normAxis(a, xs.size())] = true;
  Op op = c.kernel.op();
  // One contiguous block of reduced axes (the common case: a bias gradient
  // over [B, T], a norm over the last axis) takes the blocked kernel.
  int64_t first, last;
  if (reducedBlock(axes, xs.size(), first, last)) {
    int64_t outer = 1, R = 1, inner = 1;
    for (int64_t d = 0; d < static_cast<int64_t>(xs.size()); ++d)
      (d < first ? outer : d <= last ? R : inner) *= xs[d];
    reduceBlock(op, c.in[0].as<float>(), c.out[0].as<float>(), outer, R, inner);
    return Status::ok();
  }
  int64_t on = c.out[0].numel();
  float *y = c.out[0].as<float>();
  const float *x = c.in[0].as<float>();
  int64_t count = 1;
  for (size_t d = 0; d < xs.size(); ++d)
    if (red[d])
      count *= xs[d];
  for (int64_t i = 0; i < on; ++i)
    y[i] = op == Op::ReduceMax ? -INFINITY : 0.0f;
  // Output strides over the input's dimensions (0 on reduced ones).
  std::vector<int64_t> ost(xs.size(), 0);
  int64_t s = 1;
  for (int64_t d = xs.size() - 1; d >= 0; --d)
    if (!red[d]) {
      ost[d] = s;
      s *= xs[d];
    }
  int64_t n = c.in[0].numel();
  for (int64_t i = 0; i < n; ++i) {
    int64_t rem = i, o = 0;
    for (int64_t d = xs.size() - 1; d >= 0; --d) {
      o += (rem % xs[d]) * ost[d];
      rem /= xs[d];
    }
    y[o] = op == Op::ReduceMax ? std::max(y[o], x[i]) : y[o] + x[i];
  }
  if (op == Op::ReduceMean)
    for (int64_t i = 0; i < on; ++i)
      y[i] /= static_cast<float>(count);
  return Status::ok();
}

Status norm(KernelContext &c) {
  bool layer = c.kernel.op() == Op::LayerNorm;
  const Shape &xs = *c.in[0].shape;
  int64_t C = xs.back(), rows = c.in[0].numel() / std::max<int64_t>(C, 1);
  float eps = static_cast<float>(c.kernel.attrs_as_NormAttrs()->eps());
  const float *x = c.in[0].as<float>(), *w = c.in[1].as<float>();
  const float *b = layer ? c.in[2].as<float>() : nullptr;
  float *y = c.out[0].as<float>();
#pragma omp parallel for if (rows * C >= kParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x + r * C;
    float *yr = y + r * C;
    float mean;
    float inv = normStats(xr, C, layer, eps, mean);
    for (int64_t i = 0; i < C; ++i)
      yr[i] = (xr[i] - mean) * inv * w[i] + (layer ? b[i] : 0.0f);
  }
  return Status::ok();
}

Status softmax(KernelContext &c) {
  const Shape &xs = *c.in[0].shape;
  int64_t axis = normAxis(c.kernel.attrs_as_AxisAttrs()->axis(), xs.size());
  int64_t outer = 1, inner = 1, n = xs[axis];
  for (int64_t d = 0; d < axis; ++d)
    outer *= xs[d];
  for (size_t d = axis + 1; d < xs.size(); ++d)
    inner *= xs[d];
  const float *x = c.in[0].as<float>();
  float *y = c.out[0].as<float>();
#pragma omp parallel for collapse(2)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const float *xr = x + o * n * inner + i;
      float *yr = y + o * n * inner + i;
      float m = -INFINITY;
      for (int64_t j = 0; j < n; ++j)
        m = std::max(m, xr[j * inner]);
      float sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        yr[j * inner] = std::exp(xr[j * inner] - m);
        sum += yr[j * inner];
      }
      for (int64_t j = 0; j < n; ++j)
        yr[j * inner] /= sum;
    }
  return Status::ok();
}

Status rope(KernelContext &c) {
  const Shape &xs = *c.in[0].shape; // [B, T, C]
  const kart::RopeAttrs *attrs = c.kernel.attrs_as_RopeAttrs();
  int64_t B = xs[0], T = xs[1], C = xs[2], hd = attrs->head_dim();
  double theta = attrs->theta();
  bool half = attrs->style() == kart::RopeStyle::Half;
  bool inverse = attrs->inverse();
  const View &pos = c.in[1];
  const float *x = c.in[0].as<float>();
  float *y = c.out[0].as<float>();
  // The rotation of pair i at position p is the same for every head:
  // computed once per position (in double, then rounded), applied to all.
  std::vector<double> freq(static_cast<size_t>(hd / 2));
  for (int64_t i = 0; i < hd / 2; ++i)
    freq[i] = std::pow(theta, -2.0 * i / hd);
  std::vector<float> cs(freq.size()), sn(freq.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      int64_t p = t;
      if (pos.data)
        p = pos.shape->size() == 1 ? index(pos, t) : index(pos, b * T + t);
      for (int64_t i = 0; i < hd / 2; ++i) {
        double ang = p * freq[i];
        cs[i] = static_cast<float>(std::cos(ang));
        sn[i] = static_cast<float>(inverse ? -std::sin(ang) : std::sin(ang));
      }
      const float *xr = x + (b * T + t) * C;
      float *yr = y + (b * T + t) * C;
      for (int64_t h = 0; h < C / hd; ++h)
        for (int64_t i = 0; i < hd / 2; ++i) {
          int64_t i0 = h * hd + (half ? i : 2 * i);
          int64_t i1 = h * hd + (half ? i + hd / 2 : 2 * i + 1);
          float a = xr[i0], bb = xr[i1];
          yr[i0] = a * cs[i] - bb * sn[i];
          yr[i1] = a * sn[i] + bb * cs[i];
        }
    }
  return Status::ok();
}

Status attentionReference(KernelContext &c) {
  const Shape &qs = *c.in[0].shape, &ks = *c.in[1].shape, &vs = *c.in[2].shape;
  int64_t B = qs[0], Tq = qs[1], Tk = ks[1];
  const kart::AttentionAttrs *attrs = c.kernel.attrs_as_AttentionAttrs();
  int64_t H = attrs->heads(), Hkv = attrs->kv_heads();
  attention::Pattern pattern = attentionPattern(c.kernel, Tq, Tk);
  int64_t D = qs[2] / H, Dv = vs[2] / Hkv, group = H / Hkv;
  float scale = static_cast<float>(attrs->scale());
  const View &mask = c.in[3], &bias = c.in[4];
  Shape full = {B, H, Tq, Tk};
  std::vector<int64_t> bst;
  if (bias.data)
    bst = broadcastStrides(*bias.shape, full);
  const float *q = c.in[0].as<float>(), *k = c.in[1].as<float>(),
              *v = c.in[2].as<float>();
  float *o = c.out[0].as<float>();
  float *lse = c.out.size() > 1 ? c.out[1].as<float>() : nullptr;
#pragma omp parallel
  {
    std::vector<float> s(Tk);
#pragma omp for collapse(3)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < Tq; ++i) {
          int64_t hk = h / group;
          const float *qi = q + (b * Tq + i) * H * D + h * D;
          float m = -INFINITY;
          for (int64_t j = 0; j < Tk; ++j) {
            if (!referenceVisible(pattern, mask, b, h, Tk, i, j)) {
              s[j] = -INFINITY;
              continue;
            }
            float dot = referenceScore(qi, k + (b * Tk + j) * Hkv * D + hk * D,
                                       D, scale, bias, bst, b, h, i, j);
            s[j] = dot;
            m = std::max(m, dot);
          }
          float *oi = o + (b * Tq + i) * H * Dv + h * Dv;
          std::fill(oi, oi + Dv, 0.0f);
          if (m == -INFINITY) { // every key masked: the output row is zero
            if (lse)
              lse[(b * H + h) * Tq + i] = -INFINITY;
            continue;
          }
          float sum = 0;
          for (int64_t j = 0; j < Tk; ++j) {
            s[j] = s[j] == -INFINITY ? 0.0f : std::exp(s[j] - m);
            sum += s[j];
          }
          if (lse)
            lse[(b * H + h) * Tq + i] = m + std::log(sum);
          for (int64_t j = 0; j < Tk; ++j) {
            if (s[j] == 0.0f)
              continue;
            float p = s[j] / sum;
            const float *vj = v + (b * Tk + j) * Hkv * Dv + hk * Dv;
            for (int64_t d = 0; d < Dv; ++d)
              oi[d] += p * vj[d];
          }
        }
  }
  return Status::ok();
}

Status relativePositionBucket(KernelContext &c) {
  const Shape &os = *c.out[0].shape;
  int64_t Tq = os[0], Tk = os[1];
  const kart::RelativePositionBucketAttrs *attrs =
      c.kernel.attrs_as_RelativePositionBucketAttrs();
  bool bidir = attrs->bidirectional();
  int64_t nb = attrs->buckets(), maxDist = attrs->max_distance();
  int32_t *y = c.out[0].as<int32_t>();
  for (int64_t i = 0; i < Tq; ++i)
    for (int64_t j = 0; j < Tk; ++j)
      y[i * Tk + j] = attention::relativeBucket(j - i, bidir, nb, maxDist);
  return Status::ok();
}

Status crossEntropy(KernelContext &c) {
  const Shape &ls = *c.in[0].shape;
  int64_t V = ls.back(), rows = c.in[0].numel() / std::max<int64_t>(V, 1);
  int64_t ignore = c.kernel.attrs_as_CrossEntropyAttrs()->ignore_index(),
          counted;
  if (Status s = countTargets(c, rows, V, ignore, counted); !s)
    return s;
  const float *l = c.in[0].as<float>();
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t t = index(c.in[1], r);
    if (t == ignore)
      continue;
    const float *lr = l + r * V;
    float m = *std::max_element(lr, lr + V);
    double sum = 0;
    for (int64_t j = 0; j < V; ++j)
      sum += std::exp(static_cast<double>(lr[j] - m));
    total += std::log(sum) + m - lr[t];
  }
  // Every target ignored: the mean over nothing is NaN, as in PyTorch.
  c.out[0].as<float>()[0] = counted ? static_cast<float>(total / counted) : NAN;
  return Status::ok();
}

/// dL/dlogits = (softmax(logits) - onehot(target)) * upstream / counted,
/// row by row with the kernel softmax_cross_entropy uses.
Status crossEntropyGrad(KernelContext &c) {
  const Shape &ls = *c.in[0].shape;
  int64_t V = ls.back(), rows = c.in[0].numel() / std::max<int64_t>(V, 1);
  int64_t ignore = c.kernel.attrs_as_CrossEntropyAttrs()->ignore_index(),
          counted;
  if (Status s = countTargets(c, rows, V, ignore, counted); !s)
    return s;
  float scale = c.in[2].as<float>()[0] /
                static_cast<float>(std::max<int64_t>(counted, 1));
  const float *l = c.in[0].as<float>();
  float *d = c.out[0].as<float>();
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    int64_t t = index(c.in[1], r);
    if (t == ignore)
      std::fill(d + r * V, d + (r + 1) * V, 0.0f);
    else
      crossEntropyRow(l + r * V, d + r * V, V, t, scale);
  }
  return Status::ok();
}

} // namespace kiln::runtime::cpu::reference

bool kiln::runtime::reducedBlock(const flatbuffers::Vector<int64_t> &axes,
                                 size_t rank, int64_t &first, int64_t &last) {
  std::vector<bool> red(rank, false);
  for (int64_t a : axes)
    red[normAxis(a, rank)] = true;
  first = last = -1;
  for (size_t d = 0; d < rank; ++d)
    if (red[d]) {
      if (first < 0)
        first = static_cast<int64_t>(d);
      last = static_cast<int64_t>(d);
    }
  if (first < 0)
    return false;
  for (int64_t d = first; d <= last; ++d)
    if (!red[d])
      return false;
  return true;
}

Status kiln::runtime::countTargets(const KernelContext &c, int64_t rows,
                                   int64_t V, int64_t ignore,
                                   int64_t &counted) {
  counted = 0;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t t = index(c.in[1], r);
    if (t == ignore)
      continue;
    if (t < 0 || t >= V)
      return fail(c.kernel, "target " + std::to_string(t) + " at position " +
                                std::to_string(r) + " is outside [0, " +
                                std::to_string(V) + ")");
    ++counted;
  }
  return Status::ok();
}
