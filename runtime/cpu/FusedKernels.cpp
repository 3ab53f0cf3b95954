//===- FusedKernels.cpp - kernels of the fused ops ------------------------===//
//
// The kernels behind the kiln-fuse-* passes: residual add + normalization,
// normalization backward, softmax cross-entropy with its gradient, and
// elementwise chains run as a tile program. Each replaces several unfused
// kernels; the tests run every model with fusion on and off and compare.
// (FusedMatmul runs as a oneDNN matmul with post-ops, in OneDNN.cpp.)
//
//===----------------------------------------------------------------------===//
#include "runtime/Kernels.h"
#include "runtime/Vector.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

using namespace kiln;
using namespace kiln::runtime;
using kart::Op;
using Shape = std::vector<int64_t>;

namespace {

Status fail(const kart::Kernel &k, const std::string &msg) {
  std::string where = k.location() ? k.location()->str() + ": " : "";
  return Status::error(where + kart::EnumNameOp(k.op()) + ": " + msg);
}

std::string str(const Shape &s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i)
    r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

int64_t numelOf(const Shape &s) {
  int64_t n = 1;
  for (int64_t d : s)
    n *= d;
  return n;
}

int64_t index(const View &ids, int64_t i) {
  return ids.dtype == DType::I64 ? ids.as<int64_t>()[i] : ids.as<int32_t>()[i];
}

//===----------------------------------------------------------------------===//
// Residual add + normalization, and its backward
//===----------------------------------------------------------------------===//

/// sum = x + r; y = norm(sum). Statistics in double, as the unfused kernel.
Status addNorm(KernelContext &c) {
  const kart::FusedNormAttrs *attrs = c.kernel.attrs_as_FusedNormAttrs();
  bool layer = attrs->kind() == kart::NormKind::LayerNorm;
  int64_t C = c.in[0].shape->back();
  int64_t rows = c.in[0].numel() / std::max<int64_t>(C, 1);
  float eps = static_cast<float>(attrs->eps());
  const float *x = c.in[0].as<float>(), *r = c.in[1].as<float>();
  const float *w = c.in[2].as<float>(), *b = c.in[3].as<float>();
  float *s = c.out[0].as<float>(), *y = c.out[1].as<float>();
#pragma omp parallel for
  for (int64_t row = 0; row < rows; ++row) {
    const float *xr = x + row * C, *rr = r + row * C;
    float *sr = s + row * C, *yr = y + row * C;
#pragma omp simd
    for (int64_t i = 0; i < C; ++i)
      sr[i] = xr[i] + rr[i];
    float m;
    float inv = normStats(sr, C, layer, eps, m);
#pragma omp simd
    for (int64_t i = 0; i < C; ++i)
      yr[i] = (sr[i] - m) * inv * w[i] + (layer ? b[i] : 0.0f);
  }
  return Status::ok();
}

/// dx per row from the recomputed statistics; dw and db summed per thread
/// over a fixed partition of the rows and combined in thread order, so the
/// result does not depend on scheduling.
Status normGrad(KernelContext &c) {
  const kart::FusedNormAttrs *attrs = c.kernel.attrs_as_FusedNormAttrs();
  bool layer = attrs->kind() == kart::NormKind::LayerNorm;
  int64_t C = c.in[1].shape->back();
  int64_t rows = c.in[1].numel() / std::max<int64_t>(C, 1);
  float eps = static_cast<float>(attrs->eps());
  const float *g = c.in[0].as<float>(), *x = c.in[1].as<float>(),
              *w = c.in[2].as<float>();
  float *dx = c.out[0].as<float>(), *dw = c.out[1].as<float>(),
        *db = c.out[2].as<float>();
  int threads = omp_get_max_threads();
  std::vector<double> partial(static_cast<size_t>(threads) * 2 * C, 0.0);
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    double *pw = partial.data() + static_cast<size_t>(t) * 2 * C;
    double *pb = pw + C;
    std::vector<float> xh(C);
    int64_t lo = rows * t / nt, hi = rows * (t + 1) / nt;
    for (int64_t row = lo; row < hi; ++row) {
      const float *xr = x + row * C, *gr = g + row * C;
      float *dr = dx + row * C;
      float m;
      float inv = normStats(xr, C, layer, eps, m);
      // mean(gw) and mean(gw * xh), gw = g * w.
      float sumG = 0, sumGX = 0;
#pragma omp simd reduction(+ : sumG, sumGX)
      for (int64_t i = 0; i < C; ++i) {
        xh[i] = (xr[i] - m) * inv;
        float gw = gr[i] * w[i];
        sumG += gw;
        sumGX += gw * xh[i];
      }
      float meanG = layer ? sumG / C : 0.0f, meanGX = sumGX / C;
#pragma omp simd
      for (int64_t i = 0; i < C; ++i)
        dr[i] = inv * (gr[i] * w[i] - meanG - xh[i] * meanGX);
      for (int64_t i = 0; i < C; ++i) {
        pw[i] += static_cast<double>(gr[i]) * xh[i];
        pb[i] += gr[i];
      }
    }
  }
  for (int64_t i = 0; i < C; ++i) {
    double sw = 0, sb = 0;
    for (int t = 0; t < threads; ++t) {
      sw += partial[static_cast<size_t>(t) * 2 * C + i];
      sb += partial[static_cast<size_t>(t) * 2 * C + C + i];
    }
    dw[i] = static_cast<float>(sw);
    db[i] = layer ? static_cast<float>(sb) : 0.0f;
  }
  return Status::ok();
}

//===----------------------------------------------------------------------===//
// Softmax cross-entropy with its gradient
//===----------------------------------------------------------------------===//

/// The loss adds up per-row terms in row order, so it does not depend on
/// the thread count.
Status softmaxCrossEntropy(KernelContext &c) {
  const Shape &ls = *c.in[0].shape;
  int64_t V = ls.back(), rows = c.in[0].numel() / std::max<int64_t>(V, 1);
  int64_t ignore = c.kernel.attrs_as_CrossEntropyAttrs()->ignore_index(),
          counted;
  if (Status s = countTargets(c, rows, V, ignore, counted); !s)
    return s;
  float scale = c.in[2].as<float>()[0] /
                static_cast<float>(std::max<int64_t>(counted, 1));
  const float *l = c.in[0].as<float>();
  float *d = c.out[1].as<float>();
  std::vector<double> term(rows, 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t t = index(c.in[1], r);
    const float *lr = l + r * V;
    float *dr = d + r * V;
    if (t == ignore) {
      std::fill(dr, dr + V, 0.0f);
      continue;
    }
    term[r] = crossEntropyRow(lr, dr, V, t, scale);
  }
  double total = 0;
  for (double v : term)
    total += v;
  c.out[0].as<float>()[0] = counted ? static_cast<float>(total / counted) : NAN;
  return Status::ok();
}

//===----------------------------------------------------------------------===//
// Elementwise tile programs
//===----------------------------------------------------------------------===//

constexpr int64_t kTile = 512;

/// How element `i` of the output finds its element of an input.
struct Operand {
  enum Kind { Full, Period, Scalar, Strided } kind;
  const float *data;
  int64_t period = 0;           // Period: input element i % period
  std::vector<int64_t> strides; // Strided: per output dimension
};

Operand classify(const View &in, const Shape &out) {
  const Shape &s = *in.shape;
  int64_t n = numelOf(s), total = numelOf(out);
  Operand o{Operand::Full, in.as<float>()};
  if (n == total)
    return o;
  if (n == 1) {
    o.kind = Operand::Scalar;
    return o;
  }
  // A suffix of the output shape (after leading 1s): repeats with period n.
  size_t first = 0;
  while (first < s.size() && s[first] == 1)
    ++first;
  bool suffix = s.size() - first <= out.size();
  for (size_t d = first; suffix && d < s.size(); ++d)
    suffix = s[d] == out[out.size() - (s.size() - d)];
  if (suffix) {
    o.kind = Operand::Period;
    o.period = n;
    return o;
  }
  o.kind = Operand::Strided;
  o.strides.assign(out.size(), 0);
  int64_t st = 1;
  for (int64_t d = static_cast<int64_t>(s.size()) - 1; d >= 0; --d) {
    size_t od = out.size() - (s.size() - d);
    o.strides[od] = s[d] == 1 ? 0 : st;
    st *= s[d];
  }
  return o;
}

void load(const Operand &o, const Shape &out, int64_t start, int64_t n,
          float *dst) {
  switch (o.kind) {
  case Operand::Full:
    std::memcpy(dst, o.data + start, n * sizeof(float));
    return;
  case Operand::Scalar:
    std::fill(dst, dst + n, o.data[0]);
    return;
  case Operand::Period: {
    int64_t j = start % o.period;
    for (int64_t i = 0; i < n; ++i) {
      dst[i] = o.data[j];
      if (++j == o.period)
        j = 0;
    }
    return;
  }
  case Operand::Strided:
    for (int64_t i = 0; i < n; ++i) {
      int64_t rem = start + i, at = 0;
      for (int64_t d = static_cast<int64_t>(out.size()) - 1; d >= 0; --d) {
        at += (rem % out[d]) * o.strides[d];
        rem /= out[d];
      }
      dst[i] = o.data[at];
    }
    return;
  }
}

/// d act(x)/dx * g for an activation_grad kind.
float activationGradOf(kart::Activation kind, float g, float x) {
  switch (kind) {
  case kart::Activation::Relu:
    return x > 0 ? g : 0.0f;
  case kart::Activation::Gelu: {
    float cdf = 0.5f * (1.0f + std::erf(x * 0.7071067811865476f));
    float pdf = std::exp(-0.5f * x * x) * 0.3989422804014327f;
    return g * (cdf + x * pdf);
  }
  case kart::Activation::GeluTanh: {
    const float k = 0.7978845608028654f;
    float u = k * (x + 0.044715f * x * x * x);
    float th = std::tanh(u);
    float du = k * (1.0f + 3.0f * 0.044715f * x * x);
    return g * (0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du);
  }
  default: { // silu (the loader refuses none)
    float s = 1.0f / (1.0f + std::exp(-x));
    return g * s * (1.0f + x * (1.0f - s));
  }
  }
}

/// One instruction over a tile. Compiled for AVX2+FMA and the baseline;
/// exp-based ops use the vectorizable vexp.
__attribute__((target_clones("arch=x86-64-v3", "default"))) void
apply(Op op, int64_t variant, const float *a, const float *b, float *y,
      int64_t n) {
  switch (op) {
  case Op::Add:
#pragma omp simd
    for (int64_t i = 0; i < n; ++i)
      y[i] = a[i] + b[i];
    return;
  case Op::Sub:
#pragma omp simd
    for (int64_t i = 0; i < n; ++i)
      y[i] = a[i] - b[i];
    return;
  case Op::Mul:
#pragma omp simd
    for (int64_t i = 0; i < n; ++i)
      y[i] = a[i] * b[i];
    return;
  case Op::Div:
#pragma omp simd
    for (int64_t i = 0; i < n; ++i)
      y[i] = a[i] / b[i];
    return;
  case Op::Max:
    for (int64_t i = 0; i < n; ++i)
      y[i] = std::max(a[i], b[i]);
    return;
  case Op::Min:
    for (int64_t i = 0; i < n; ++i)
      y[i] = std::min(a[i], b[i]);
    return;
  case Op::Pow:
    for (int64_t i = 0; i < n; ++i)
      y[i] = std::pow(a[i], b[i]);
    return;
  case Op::Neg:
#pragma omp simd
    for (int64_t i = 0; i < n; ++i)
      y[i] = -a[i];
    return;
  case Op::Exp:
#pragma omp simd
    for (int64_t i = 0; i < n; ++i)
      y[i] = vexp(a[i]);
    return;
  case Op::Log:
    for (int64_t i = 0; i < n; ++i)
      y[i] = std::log(a[i]);
    return;
  case Op::Sqrt:
#pragma omp simd
    for (int64_t i = 0; i < n; ++i)
      y[i] = std::sqrt(a[i]);
    return;
  case Op::Rsqrt:
#pragma omp simd
    for (int64_t i = 0; i < n; ++i)
      y[i] = 1.0f / std::sqrt(a[i]);
    return;
  case Op::Tanh:
    for (int64_t i = 0; i < n; ++i)
      y[i] = std::tanh(a[i]);
    return;
  case Op::Sigmoid:
#pragma omp simd
    for (int64_t i = 0; i < n; ++i)
      y[i] = 1.0f / (1.0f + vexp(-a[i]));
    return;
  case Op::Relu:
#pragma omp simd
    for (int64_t i = 0; i < n; ++i)
      y[i] = a[i] > 0 ? a[i] : 0.0f;
    return;
  case Op::Silu:
#pragma omp simd
    for (int64_t i = 0; i < n; ++i)
      y[i] = a[i] / (1.0f + vexp(-a[i]));
    return;
  case Op::Gelu:
    for (int64_t i = 0; i < n; ++i)
      y[i] = geluOf(a[i], variant);
    return;
  case Op::ActivationGrad:
    for (int64_t i = 0; i < n; ++i)
      y[i] =
          activationGradOf(static_cast<kart::Activation>(variant), a[i], b[i]);
    return;
  default:
    return;
  }
}

/// The program (kart::ElementwiseProgram): registers are the inputs, the
/// constants, then one per instruction. Each thread evaluates whole tiles.
Status fusedElementwise(KernelContext &c) {
  const kart::ElementwiseProgram &program =
      *c.kernel.attrs_as_ElementwiseProgram();
  const auto *constants = program.constants();
  const Shape &out = *c.out[0].shape;
  int64_t total = c.out[0].numel();
  int64_t nin = c.in.size(), nconst = constants ? constants->size() : 0;
  int64_t count = program.code()->size();
  int64_t nreg = nin + nconst + count;
  int64_t result = program.result();
  std::vector<Operand> operands;
  for (const View &v : c.in)
    operands.push_back(classify(v, out));
  float *y = c.out[0].as<float>();
  int64_t tiles = (total + kTile - 1) / kTile;
#pragma omp parallel if (tiles > 4)
  {
    std::vector<float> regs(static_cast<size_t>(nreg) * kTile);
    auto reg = [&](int64_t r) { return regs.data() + r * kTile; };
    for (int64_t i = 0; i < nconst; ++i)
      std::fill(reg(nin + i), reg(nin + i) + kTile,
                static_cast<float>(constants->Get(i)));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      int64_t start = t * kTile, n = std::min(kTile, total - start);
      for (int64_t i = 0; i < nin; ++i)
        load(operands[i], out, start, n, reg(i));
      for (int64_t i = 0; i < count; ++i) {
        const kart::Instruction &ins = *program.code()->Get(i);
        apply(ins.op(), ins.variant(), reg(ins.a()),
              ins.b() >= 0 ? reg(ins.b()) : nullptr, reg(nin + nconst + i), n);
      }
      std::memcpy(y + start, reg(result), n * sizeof(float));
    }
  }
  return Status::ok();
}

} // namespace

Status kiln::runtime::inferFusedShapes(const kart::Kernel &k,
                                       const std::vector<const Shape *> &in,
                                       std::vector<Shape> &out) {
  auto shape = [&](size_t i) -> const Shape & { return *in[i]; };
  switch (k.op()) {
  case Op::FusedMatmul: {
    const Shape &a = shape(0), &b = shape(1);
    const kart::FusedMatmulAttrs *attrs = k.attrs_as_FusedMatmulAttrs();
    bool ta = attrs->transpose_a(), tb = attrs->transpose_b(),
         rb = attrs->reduce_batch();
    if (a.size() < 2 || b.size() < 2)
      return fail(k, "operands " + str(a) + " and " + str(b) +
                         " must have rank >= 2");
    int64_t m = ta ? a.back() : a[a.size() - 2];
    int64_t ka = ta ? a[a.size() - 2] : a.back();
    int64_t kb = tb ? b.back() : b[b.size() - 2];
    int64_t n = tb ? b[b.size() - 2] : b.back();
    if (ka != kb)
      return fail(k, "contraction sizes differ: " + str(a) + " x " + str(b));
    Shape o;
    if (rb) {
      if (a.size() != b.size() || a.size() < 3 ||
          !std::equal(a.begin(), a.end() - 2, b.begin()))
        return fail(k, "reduce_batch needs equal batch dimensions, got " +
                           str(a) + " and " + str(b));
      o = {m, n};
    } else {
      size_t rank = std::max(a.size(), b.size());
      o.assign(rank, 1);
      for (size_t d = 0; d + 2 < rank; ++d) {
        int64_t da = d + a.size() >= rank ? a[d + a.size() - rank] : 1;
        int64_t db = d + b.size() >= rank ? b[d + b.size() - rank] : 1;
        if (da != db && da != 1 && db != 1)
          return fail(k, "batch dimensions of " + str(a) + " and " + str(b) +
                             " do not broadcast");
        o[d] = std::max(da, db);
      }
      o[rank - 2] = m;
      o[rank - 1] = n;
    }
    if (in[2] && shape(2) != Shape{n})
      return fail(k, "bias " + str(shape(2)) + " must be [" +
                         std::to_string(n) + "]");
    if (in[3] && shape(3) != o)
      return fail(k, "residual " + str(shape(3)) + " must be " + str(o));
    out.push_back(o);
    return Status::ok();
  }
  case Op::AddNorm: {
    const Shape &x = shape(0);
    if (x.empty() || shape(1) != x || shape(2) != Shape{x.back()} ||
        (in[3] && shape(3) != Shape{x.back()}))
      return fail(k, "input " + str(x) + ", residual " + str(shape(1)) +
                         " and weight " + str(shape(2)) + " do not match");
    out = {x, x};
    return Status::ok();
  }
  case Op::NormGrad: {
    const Shape &x = shape(1);
    if (x.empty() || shape(0) != x || shape(2) != Shape{x.back()})
      return fail(k, "gradient " + str(shape(0)) + ", input " + str(x) +
                         " and weight " + str(shape(2)) + " do not match");
    out = {x, shape(2), shape(2)};
    return Status::ok();
  }
  case Op::SoftmaxCrossEntropy:
    if (shape(0).empty() ||
        Shape(shape(0).begin(), shape(0).end() - 1) != shape(1))
      return fail(k, "targets " + str(shape(1)) + " do not match logits " +
                         str(shape(0)));
    out = {Shape{}, shape(0)};
    return Status::ok();
  case Op::FusedElementwise: {
    Shape o;
    for (const Shape *s : in) {
      size_t rank = std::max(o.size(), s->size());
      Shape r(rank, 1);
      for (size_t d = 0; d < rank; ++d) {
        int64_t a = d + o.size() >= rank ? o[d + o.size() - rank] : 1;
        int64_t b = d + s->size() >= rank ? (*s)[d + s->size() - rank] : 1;
        if (a != b && a != 1 && b != 1)
          return fail(k, "inputs " + str(o) + " and " + str(*s) +
                             " do not broadcast");
        r[d] = std::max(a, b);
      }
      o = r;
    }
    out.push_back(o);
    return Status::ok();
  }
  default:
    return fail(k, "is not a fused op");
  }
}

Status kiln::runtime::executeFused(KernelContext &c) {
  switch (c.kernel.op()) {
  case Op::AddNorm:
    return addNorm(c);
  case Op::NormGrad:
    return normGrad(c);
  case Op::SoftmaxCrossEntropy:
    return softmaxCrossEntropy(c);
  case Op::FusedElementwise:
    return fusedElementwise(c);
  default:
    return fail(c.kernel, "has no fused kernel");
  }
}

/// The naive fused matmul (KILN_REFERENCE_KERNELS): double accumulation,
/// then the epilogue in the op's order.
Status kiln::runtime::fusedMatmulReference(KernelContext &c) {
  const Shape &a = *c.in[0].shape, &b = *c.in[1].shape, &o = *c.out[0].shape;
  const kart::FusedMatmulAttrs *attrs = c.kernel.attrs_as_FusedMatmulAttrs();
  bool ta = attrs->transpose_a(), tb = attrs->transpose_b();
  bool reduceBatch = attrs->reduce_batch();
  int64_t M = o[o.size() - 2], N = o.back();
  int64_t K = ta ? a[a.size() - 2] : a.back();
  int64_t batches = reduceBatch ? numelOf(Shape(a.begin(), a.end() - 2))
                                : numelOf(Shape(o.begin(), o.end() - 2));
  auto batchOffset = [&](const Shape &s, int64_t ob) {
    // Row-major offset of batch `ob` of the output in operand `s`
    // (broadcast dimensions of size 1 stay at 0).
    if (reduceBatch)
      return ob * s[s.size() - 2] * s.back();
    int64_t off = 0, stride = s[s.size() - 2] * s.back();
    int64_t rem = ob;
    for (int64_t d = static_cast<int64_t>(o.size()) - 3; d >= 0; --d) {
      int64_t od = o[d], idx = rem % od;
      rem /= od;
      int64_t sd = d - static_cast<int64_t>(o.size() - s.size());
      if (sd >= 0) {
        off += (s[sd] == 1 ? 0 : idx) * stride;
        stride *= s[sd];
      }
    }
    return off;
  };
  const float *A = c.in[0].as<float>(), *B = c.in[1].as<float>();
  const float *bias = c.in[2].as<float>(), *res = c.in[3].as<float>();
  float *Y = c.out[0].as<float>();
  float scale = static_cast<float>(attrs->scale());
  kart::Activation act = attrs->activation();
  int64_t outBatches = reduceBatch ? 1 : batches;
  std::vector<double> acc(static_cast<size_t>(M) * N);
  for (int64_t ob = 0; ob < outBatches; ++ob) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t rb = 0; rb < (reduceBatch ? batches : 1); ++rb) {
      int64_t which = reduceBatch ? rb : ob;
      const float *Ab = A + batchOffset(a, which),
                  *Bb = B + batchOffset(b, which);
      for (int64_t i = 0; i < M; ++i)
        for (int64_t kk = 0; kk < K; ++kk) {
          double av = ta ? Ab[kk * M + i] : Ab[i * K + kk];
          for (int64_t j = 0; j < N; ++j)
            acc[i * N + j] += av * (tb ? Bb[j * K + kk] : Bb[kk * N + j]);
        }
    }
    for (int64_t i = 0; i < M * N; ++i) {
      float v = static_cast<float>(acc[i]) + (bias ? bias[i % N] : 0.0f);
      v *= scale;
      if (act == kart::Activation::Relu)
        v = v > 0 ? v : 0.0f;
      else if (act == kart::Activation::Gelu ||
               act == kart::Activation::GeluTanh)
        v = geluOf(v, act == kart::Activation::GeluTanh);
      else if (act == kart::Activation::Silu)
        v = v / (1.0f + std::exp(-v));
      int64_t at = ob * M * N + i;
      Y[at] = v + (res ? res[at] : 0.0f);
    }
  }
  return Status::ok();
}

std::string
kiln::runtime::checkFusedKernel(const kart::Kernel &k,
                                const std::vector<FusedOperand> &in,
                                const std::vector<FusedOperand> &out) {
  auto allF32 = [](const std::vector<FusedOperand> &v) {
    for (const FusedOperand &o : v)
      if (o.present && !o.f32)
        return false;
    return true;
  };
  switch (k.op()) {
  case Op::FusedMatmul: {
    const kart::FusedMatmulAttrs *a = k.attrs_as_FusedMatmulAttrs();
    if (!allF32(in) || !allF32(out) || in[0].rank < 2 || in[1].rank < 2)
      return "needs f32 operands of rank >= 2";
    if (a->activation() > kart::Activation::MAX)
      return "has an unknown activation " +
             std::to_string(static_cast<int>(a->activation()));
    if (a->reduce_batch() &&
        (!a->transpose_a() || a->transpose_b() || in[2].present ||
         in[3].present || a->activation() != kart::Activation::None ||
         in[0].rank != in[1].rank || in[0].rank < 3 || out[0].rank != 2))
      return "reduce_batch needs transpose_a, operands of one rank >= 3 and "
             "no epilogue";
    if ((in[2].present && in[2].rank != 1) ||
        (in[3].present && in[3].rank != out[0].rank))
      return "bias must be a vector and the residual shaped like the result";
    return "";
  }
  case Op::AddNorm:
  case Op::NormGrad: {
    kart::NormKind kind = k.attrs_as_FusedNormAttrs()->kind();
    if (kind != kart::NormKind::LayerNorm && kind != kart::NormKind::RMSNorm)
      return "has an unknown normalization " +
             std::to_string(static_cast<int>(kind));
    bool layer = kind == kart::NormKind::LayerNorm;
    if (!allF32(in) || !allF32(out) || in[2].rank != 1 || in[0].rank < 1 ||
        in[0].rank != in[1].rank)
      return "needs f32 inputs and a weight vector";
    if (k.op() == Op::AddNorm &&
        (in[3].present != layer || (in[3].present && in[3].rank != 1)))
      return "layernorm takes a bias vector and rmsnorm none";
    return "";
  }
  case Op::SoftmaxCrossEntropy:
    if (!in[0].f32 || in[0].rank < 1 || !in[1].integer ||
        in[1].rank != in[0].rank - 1 || !in[2].f32 || in[2].rank != 0 ||
        !out[0].f32 || out[0].rank != 0 || !out[1].f32 ||
        out[1].rank != in[0].rank)
      return "needs f32 logits, integer targets, a scalar f32 upstream, a "
             "scalar loss and a gradient shaped like the logits";
    return "";
  case Op::FusedElementwise: {
    if (!allF32(in) || !allF32(out))
      return "needs f32 operands";
    const kart::ElementwiseProgram &program = *k.attrs_as_ElementwiseProgram();
    int64_t count = program.code()->size();
    int64_t nin = in.size(),
            nconst = program.constants() ? program.constants()->size() : 0;
    if (count < 1 || count > 4096)
      return "has a malformed program (" + std::to_string(count) +
             " instructions)";
    for (int64_t i = 0; i < count; ++i) {
      const kart::Instruction &ins = *program.code()->Get(i);
      int64_t a = ins.a(), b = ins.b(), defined = nin + nconst + i;
      const OpInfo *info = findOp(ins.op());
      bool fusible = info && info->has(kFusible);
      bool binaryOp = fusible && info->inputs.min == 2;
      bool variantOk =
          ins.op() == Op::Gelu
              ? ins.variant() >= 0 &&
                    ins.variant() <=
                        static_cast<int>(kart::GeluApproximation::MAX)
          : ins.op() == Op::ActivationGrad
              ? ins.variant() > 0 &&
                    ins.variant() <= static_cast<int>(kart::Activation::MAX)
              : ins.variant() == 0;
      if (!fusible || !variantOk)
        return "program instruction " + std::to_string(i) + " has op code " +
               std::to_string(static_cast<int>(ins.op())) + " (variant " +
               std::to_string(ins.variant()) + ")";
      if (a < 0 || a >= defined || (binaryOp && (b < 0 || b >= defined)) ||
          (!binaryOp && b != -1))
        return "program instruction " + std::to_string(i) +
               " reads a register not yet defined";
    }
    int64_t result = program.result();
    if (result < 0 || result >= nin + nconst + count)
      return "program result register " + std::to_string(result) +
             " is out of range";
    return "";
  }
  default:
    return "is not a fused op";
  }
}

/// One row: a pass for the maximum, one writing exp(x - max) and summing
/// it, one scaling that to (p - onehot) * scale. The output may be the
/// logits' own storage. Returns the row's loss term.
__attribute__((target_clones("arch=x86-64-v3", "default"))) double
kiln::runtime::crossEntropyRow(const float *lr, float *dr, int64_t V, int64_t t,
                               float scale) {
  float m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < V; ++j)
    m = std::max(m, lr[j]);
  float target = lr[t], sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < V; ++j) {
    dr[j] = vexp(lr[j] - m);
    sum += dr[j];
  }
  float k = scale / sum;
#pragma omp simd
  for (int64_t j = 0; j < V; ++j)
    dr[j] *= k;
  dr[t] -= scale;
  return std::log(static_cast<double>(sum)) + m - target;
}

float kiln::runtime::gelu(float x, bool tanhForm) {
  return geluOf(x, tanhForm);
}

float kiln::runtime::geluOf(float x, bool tanhForm) {
  if (tanhForm) {
    const float k = 0.7978845608028654f;
    return 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
  }
  return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f));
}
