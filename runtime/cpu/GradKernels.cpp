//===- GradKernels.cpp - dropout masks and gradient kernels ---------------===//
//
// The training side of the CPU reference kernels: dropout in training mode,
// the gradients of embeddings, activations, reductions and attention, the
// global gradient norm and the in-place optimizer update.
//
//===----------------------------------------------------------------------===//
#include "runtime/Random.h"
#include "runtime/Vector.h"
#include "runtime/attention/BlockGemm.h"
#include "runtime/cpu/KernelUtil.h"

#include <algorithm>
#include <cmath>
#include <cstring>

using namespace kiln;
using namespace kiln::runtime;
using kart::Op;

namespace kiln::runtime::cpu {

namespace {

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;

/// The draws of one dropout kernel: element i survives unless the uniform
/// of SplitMix64{base + i * kGolden} falls below the rate.
uint64_t dropoutBase(const KernelContext &c) {
  const kart::DropoutAttrs *attrs = c.kernel.attrs_as_DropoutAttrs();
  return SplitMix64{
      c.seed ^ (static_cast<uint64_t>(attrs->seed()) * 0xd1b54a32d192ed03ull)}
      .next();
}

/// One draw of the fast kernel: SplitMix64 inlined on integers.
__attribute__((always_inline)) inline float
dropOne(float x, uint64_t i, uint64_t base, uint64_t threshold, float keep) {
  uint64_t z = base + (i + 1) * kGolden;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (z >> 11) < threshold ? 0.0f : x * keep;
}

/// Elements [begin, end), 8 draws at a time: AVX-512DQ multiplies 64-bit
/// integers in one instruction. (AVX2 has no such multiply; emulated,
/// vectors were slower than the scalar loop there.)
__attribute__((target("avx512f,avx512dq"))) void
dropoutAvx512(const float *x, float *y, int64_t begin, int64_t end,
              uint64_t base, uint64_t threshold, float keep) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i)
    y[i] = dropOne(x[i], static_cast<uint64_t>(i), base, threshold, keep);
}
void dropoutScalar(const float *x, float *y, int64_t begin, int64_t end,
                   uint64_t base, uint64_t threshold, float keep) {
  for (int64_t i = begin; i < end; ++i)
    y[i] = dropOne(x[i], static_cast<uint64_t>(i), base, threshold, keep);
}

/// AVX-512DQ where the CPU has it and KILN_MAX_ISA allows AVX-512.
bool useAvx512Dropout() {
  static const bool dq = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512dq") != 0;
  }();
  return dq && attention::bestIsa() == attention::Isa::Avx512;
}

} // namespace

uint64_t dropoutThreshold(double rate) {
  uint64_t lo = 0, hi = uint64_t(1) << 53;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    if ((static_cast<double>(mid) + 0.5) * 0x1.0p-53 < rate)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/// Dropout in training: element `i` survives unless a counter-based random
/// draw from (run seed, op seed, i) falls below the rate, so the backward
/// pass regenerates exactly the forward mask. The reference kernel.
Status dropoutTraining(KernelContext &c) {
  double rate = c.kernel.attrs_as_DropoutAttrs()->rate();
  int64_t n = c.in[0].numel();
  const float *x = c.in[0].as<float>();
  float *y = c.out[0].as<float>();
  uint64_t base = dropoutBase(c);
  float keep = static_cast<float>(1.0 / (1.0 - rate));
#pragma omp parallel for if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    SplitMix64 r{base + static_cast<uint64_t>(i) * kGolden};
    y[i] = r.uniform() < rate ? 0.0f : x[i] * keep;
  }
  return Status::ok();
}

/// The same mask and values, faster: the mask is an integer comparison
/// (no conversion to double), and with AVX-512DQ the draws are vectorized.
bool dropoutTrainingFast(KernelContext &c, Status &s) {
  double rate = c.kernel.attrs_as_DropoutAttrs()->rate();
  if (!c.training || !(rate > 0))
    return false; // the identity: the reference copies
  int64_t n = c.in[0].numel();
  const float *x = c.in[0].as<float>();
  float *y = c.out[0].as<float>();
  uint64_t base = dropoutBase(c), threshold = dropoutThreshold(rate);
  float keep = static_cast<float>(1.0 / (1.0 - rate));
  auto range = useAvx512Dropout() ? dropoutAvx512 : dropoutScalar;
  constexpr int64_t kChunk = 16384;
  int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for if (chunks > 2)
  for (int64_t k = 0; k < chunks; ++k)
    range(x, y, k * kChunk, std::min(n, (k + 1) * kChunk), base, threshold,
          keep);
  s = Status::ok();
  return true;
}

Status embeddingGrad(KernelContext &c) {
  const View &g = c.in[0], &ids = c.in[1];
  int64_t v = (*c.out[0].shape)[0], d = (*c.out[0].shape)[1], n = ids.numel();
  float *out = c.out[0].as<float>();
  std::fill(out, out + v * d, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    int64_t id = index(ids, i);
    if (id < 0 || id >= v)
      return fail(c.kernel, "index " + std::to_string(id) + " at position " +
                                std::to_string(i) + " is outside [0, " +
                                std::to_string(v) + ")");
    const float *gr = g.as<float>() + i * d;
    float *row = out + id * d;
    for (int64_t j = 0; j < d; ++j)
      row[j] += gr[j];
  }
  return Status::ok();
}

Status activationGrad(KernelContext &c) {
  const kart::Activation kind = c.kernel.attrs_as_ActivationGradAttrs()->kind();
  const float *g = c.in[0].as<float>(), *x = c.in[1].as<float>();
  float *y = c.out[0].as<float>();
  int64_t n = c.out[0].numel();
#pragma omp parallel for if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    double v = x[i], d;
    switch (kind) {
    case kart::Activation::Relu:
      d = v > 0 ? 1.0 : 0.0;
      break;
    case kart::Activation::Gelu:
      d = 0.5 * (1.0 + std::erf(v * 0.7071067811865476)) +
          v * std::exp(-0.5 * v * v) * 0.3989422804014327;
      break;
    case kart::Activation::GeluTanh: {
      const double kk = 0.7978845608028654, cc = 0.044715;
      double t = std::tanh(kk * (v + cc * v * v * v));
      d = 0.5 * (1.0 + t) +
          0.5 * v * (1.0 - t * t) * kk * (1.0 + 3.0 * cc * v * v);
      break;
    }
    default: { // silu (the loader refuses none)
      double sg = 1.0 / (1.0 + std::exp(-v));
      d = sg * (1.0 + v * (1.0 - sg));
      break;
    }
    }
    y[i] = static_cast<float>(g[i] * d);
  }
  return Status::ok();
}

Status reduceGrad(KernelContext &c) {
  const Shape &xs = *c.in[1].shape;
  const kart::ReduceGradAttrs *attrs = c.kernel.attrs_as_ReduceGradAttrs();
  std::vector<bool> red(xs.size(), false);
  for (int64_t a : *attrs->axes())
    red[normAxis(a, xs.size())] = true;
  const kart::ReduceKind kind = attrs->kind();
  const float *g = c.in[0].as<float>(), *x = c.in[1].as<float>();
  float *y = c.out[0].as<float>();
  int64_t count = 1;
  std::vector<int64_t> ost(xs.size(), 0);
  int64_t s = 1;
  for (int64_t d = xs.size() - 1; d >= 0; --d) {
    if (red[d]) {
      count *= xs[d];
    } else {
      ost[d] = s;
      s *= xs[d];
    }
  }
  int64_t n = c.in[1].numel(), on = s;
  auto outIndex = [&](int64_t i) {
    int64_t rem = i, o = 0;
    for (int64_t d = xs.size() - 1; d >= 0; --d) {
      o += (rem % xs[d]) * ost[d];
      rem /= xs[d];
    }
    return o;
  };
  if (kind == kart::ReduceKind::Max) {
    std::vector<float> mx(on, -INFINITY);
    std::vector<int64_t> ties(on, 0);
    for (int64_t i = 0; i < n; ++i)
      mx[outIndex(i)] = std::max(mx[outIndex(i)], x[i]);
    for (int64_t i = 0; i < n; ++i)
      ties[outIndex(i)] += x[i] == mx[outIndex(i)];
    for (int64_t i = 0; i < n; ++i) {
      int64_t o = outIndex(i);
      y[i] = x[i] == mx[o] ? g[o] / static_cast<float>(ties[o]) : 0.0f;
    }
    return Status::ok();
  }
  float scale =
      kind == kart::ReduceKind::Mean ? 1.0f / static_cast<float>(count) : 1.0f;
#pragma omp parallel for if (n > 32768)
  for (int64_t i = 0; i < n; ++i)
    y[i] = g[outIndex(i)] * scale;
  return Status::ok();
}

/// The fused attention backward. Per query row it recomputes the scores and,
/// from the saved log-sum-exp, the probabilities p; with D = dO . O,
/// dS = p (dO . v - D), dQ = scale dS K, dK = scale dS^T Q, dV = p^T dO.
/// Threads own (batch, key/value head) pairs, so dK and dV need no locks.
Status attentionGrad(KernelContext &c) {
  const View &gO = c.in[0], &qv = c.in[1], &kv = c.in[2], &vv = c.in[3],
             &ov = c.in[4], &lv = c.in[5], &mask = c.in[6], &bias = c.in[7];
  const Shape &qs = *qv.shape, &ks = *kv.shape, &vs = *vv.shape;
  int64_t B = qs[0], Tq = qs[1], Tk = ks[1];
  const kart::AttentionAttrs *attrs = c.kernel.attrs_as_AttentionAttrs();
  int64_t H = attrs->heads(), Hkv = attrs->kv_heads();
  attention::Pattern pattern = attentionPattern(c.kernel, Tq, Tk);
  int64_t D = qs[2] / H, Dv = vs[2] / Hkv, group = H / Hkv;
  float scale = static_cast<float>(attrs->scale());
  Shape full = {B, H, Tq, Tk};
  std::vector<int64_t> bst;
  if (bias.data)
    bst = broadcastStrides(*bias.shape, full);
  const float *g = gO.as<float>(), *q = qv.as<float>(), *k = kv.as<float>(),
              *v = vv.as<float>(), *o = ov.as<float>(), *lse = lv.as<float>();
  float *dq = c.out[0].as<float>(), *dk = c.out[1].as<float>(),
        *dv = c.out[2].as<float>();
  std::fill(dq, dq + c.out[0].numel(), 0.0f);
  std::fill(dk, dk + c.out[1].numel(), 0.0f);
  std::fill(dv, dv + c.out[2].numel(), 0.0f);
  // With a bias, dS is its gradient before the broadcast sum: kept whole.
  std::vector<float> dsAll(bias.data ? B * H * Tq * Tk : 0, 0.0f);
#pragma omp parallel for collapse(2)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t hk = 0; hk < Hkv; ++hk)
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h)
        for (int64_t i = 0; i < Tq; ++i) {
          float l = lse[(b * H + h) * Tq + i];
          if (l == -INFINITY)
            continue;
          const float *qi = q + (b * Tq + i) * H * D + h * D;
          const float *gi = g + (b * Tq + i) * H * Dv + h * Dv;
          const float *oi = o + (b * Tq + i) * H * Dv + h * Dv;
          float *dqi = dq + (b * Tq + i) * H * D + h * D;
          float di = 0;
          for (int64_t d = 0; d < Dv; ++d)
            di += gi[d] * oi[d];
          for (int64_t j = 0; j < Tk; ++j) {
            if (!referenceVisible(pattern, mask, b, h, Tk, i, j))
              continue;
            const float *kj = k + (b * Tk + j) * Hkv * D + hk * D;
            const float *vj = v + (b * Tk + j) * Hkv * Dv + hk * Dv;
            float sc = referenceScore(qi, kj, D, scale, bias, bst, b, h, i, j);
            float p = std::exp(sc - l);
            float dp = 0;
            for (int64_t d = 0; d < Dv; ++d)
              dp += gi[d] * vj[d];
            float ds = p * (dp - di);
            if (bias.data)
              dsAll[((b * H + h) * Tq + i) * Tk + j] = ds;
            float *dkj = dk + (b * Tk + j) * Hkv * D + hk * D;
            float *dvj = dv + (b * Tk + j) * Hkv * Dv + hk * Dv;
            for (int64_t d = 0; d < D; ++d) {
              dqi[d] += scale * ds * kj[d];
              dkj[d] += scale * ds * qi[d];
            }
            for (int64_t d = 0; d < Dv; ++d)
              dvj[d] += p * gi[d];
          }
        }
  if (bias.data) {
    float *db = c.out[3].as<float>();
    std::fill(db, db + c.out[3].numel(), 0.0f);
    int64_t n = B * H * Tq * Tk;
    for (int64_t e = 0; e < n; ++e) {
      int64_t j = e % Tk, i = (e / Tk) % Tq, h = (e / (Tk * Tq)) % H,
              b = e / (Tk * Tq * H);
      db[b * bst[0] + h * bst[1] + i * bst[2] + j * bst[3]] += dsAll[e];
    }
  }
  return Status::ok();
}

Status globalNorm(KernelContext &c) {
  std::vector<std::pair<const float *, int64_t>> ts;
  for (const View &v : c.in)
    ts.push_back({v.as<float>(), v.numel()});
  c.out[0].as<float>()[0] = static_cast<float>(std::sqrt(sumOfSquares(ts)));
  return Status::ok();
}

Status optimizerUpdate(KernelContext &c) {
  if (!c.optimizer || c.paramIndex < 0)
    return fail(c.kernel, "has no optimizer state to update");
  UpdateRule r;
  const kart::OptimizerAttrs *attrs = c.kernel.attrs_as_OptimizerAttrs();
  r.adamw = attrs->kind() == kart::OptimizerKind::AdamW;
  r.lr = c.in[3].as<float>()[0];
  float step = c.in[4].as<float>()[0];
  if (!(step >= 1) || !(r.lr >= 0))
    return fail(c.kernel, "needs lr >= 0 and step >= 1, got lr " +
                              std::to_string(r.lr) + " and step " +
                              std::to_string(step));
  r.step = static_cast<int64_t>(std::lround(step));
  r.beta1 = static_cast<float>(attrs->beta1());
  r.beta2 = static_cast<float>(attrs->beta2());
  r.eps = static_cast<float>(attrs->eps());
  r.weightDecay = static_cast<float>(attrs->weight_decay());
  r.momentum = static_cast<float>(attrs->momentum());
  r.clip = clipScale(c.in[2].as<float>()[0], attrs->max_norm());
  int64_t n = c.in[0].numel();
  OptimizerState &st = *c.optimizer;
  size_t i = static_cast<size_t>(c.paramIndex);
  if (c.paramFrozen)
    return fail(c.kernel, "updates a frozen parameter (trainable = false)");
  if (st.m.size() <= i)
    st.m.resize(i + 1);
  if (st.v.size() <= i)
    st.v.resize(i + 1);
  if (st.m[i].size() != static_cast<size_t>(n))
    st.m[i].assign(n, 0.0f);
  if (r.adamw && st.v[i].size() != static_cast<size_t>(n))
    st.v[i].assign(n, 0.0f);
  applyUpdate(r, c.in[0].as<float>(), st.m[i].data(),
              r.adamw ? st.v[i].data() : nullptr, c.in[1].as<float>(), n);
  return Status::ok();
}

} // namespace kiln::runtime::cpu
