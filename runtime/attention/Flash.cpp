//===- Flash.cpp - blocked (flash) attention, forward and backward -------===//
//
// Attention as an iteration over (query block, key block) pairs taken from a
// block list (runtime/attention/Pattern.h): dense, causal (blocks above the
// diagonal never listed) and, later, sliding-window or block-sparse
// attention differ only in the pattern, which makes the list and masks
// inside the blocks it does not wholly see.
//
// Forward (per batch, head and query block, threads over all three): the
// scores of one key block at a time, an online softmax (running maximum and
// sum, the output rescaled as the maximum grows), and the log-sum-exp saved
// for the backward pass. No Tq x Tk buffer: scratch is a few blocks per
// thread, so memory grows linearly with the sequence.
//
// Backward (per batch and key/value head, so dK and dV need no locks): for
// each key block, every query block that sees it recomputes its scores and
// probabilities from the saved log-sum-exp; dV += P^T dO, dS = P (dO V^T -
// D), dQ += dS K, dK += dS^T Q (D = rowsum(dO * O)).
//
// Every block product (Q Kᵀ, P V; dO Vᵀ, Pᵀ dO, dS K, dSᵀ Q) goes through
// the register-blocked micro-kernels of attention/BlockGemm.h, for the best
// instruction set the CPU has (AVX-512, AVX2, or plain loops). The forward
// pass packs each key block it needs transposed once per call, not once per
// query block. The softmax loops are written for the vectorizer and compiled
// for AVX2+FMA and the baseline (target_clones). cpu/Kernels.cpp keeps the
// naive per-row kernels as the reference these are tested against.
//
//===----------------------------------------------------------------------===//
#include "runtime/Kernels.h"
#include "runtime/Vector.h"
#include "runtime/attention/BlockGemm.h"
#include "runtime/attention/BlockSoftmax.h"
#include "runtime/attention/Layout.h"
#include "runtime/attention/Pattern.h"
#include "runtime/cpu/KernelUtil.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

using namespace kiln;
using namespace kiln::runtime;
using Shape = std::vector<int64_t>;

namespace {

/// Asks the cache for `rows` rows of `bytes` bytes, `stride` floats apart,
/// ahead of their use: the next listed key block's packed keys and value
/// rows, which for a sparse layout (BigBird's random blocks) are seldom
/// where the hardware prefetcher looks.
void prefetchRows(const float *base, int64_t rows, int64_t stride,
                  int64_t bytes) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t at = 0; at < bytes; at += 64)
      __builtin_prefetch(reinterpret_cast<const char *>(base + r * stride) + at,
                         /*rw=*/0, /*locality=*/2);
}

constexpr int64_t kBlockQ = attention::kKernelBlockQ,
                  kBlockK = attention::kKernelBlockK;

/// What a kernel needs to know about one (batch, head) slice.
struct Problem {
  int64_t B, Tq, Tk, H, Hkv, D, Dv;
  float scale;
  /// Which keys each query sees: the block lists and the in-block mask.
  attention::Pattern pattern;
  const float *q, *k, *v;
  const View *mask, *bias;
  std::vector<int64_t> biasStrides;
  /// The key padding mask as 0 (attend) or -inf, [B, Tk].
  std::vector<float> maskAdd;
  attention::Isa isa = attention::bestIsa();
  int64_t qRow() const { return H * D; } // element stride between rows
  int64_t kRow() const { return Hkv * D; }
  int64_t vRow() const { return Hkv * Dv; }
  int64_t oRow() const { return H * Dv; }
};

double maskAt(const View &m, int64_t i) {
  switch (m.dtype) {
  case DType::F32:
    return m.as<float>()[i];
  case DType::F64:
    return m.as<double>()[i];
  case DType::I32:
    return m.as<int32_t>()[i];
  case DType::I64:
    return static_cast<double>(m.as<int64_t>()[i]);
  case DType::Bool:
    return m.as<uint8_t>()[i];
  default:
    return 1;
  }
}

/// S[i][j] = scale * q_i . k_j (+ bias) for one block, -inf where masked.
/// `kt` is the key block transposed to [D][kBlockK] so the inner loop runs
/// along keys with unit stride.
void blockScores(const Problem &p, int64_t b, int64_t h, int64_t i0, int64_t ni,
                 int64_t j0, int64_t nj, const float *kt, float *s) {
  attention::blockGemm(p.isa, ni, kBlockK, p.D, p.scale,
                       p.q + (b * p.Tq + i0) * p.qRow() + h * p.D, p.qRow(), 1,
                       kt, kBlockK, s, kBlockK, /*accumulate=*/false);
  bool whole = p.pattern.allVisible(h, i0, i0 + ni, j0, j0 + nj);
  if (whole && !p.mask->data && !p.bias->data && nj == kBlockK)
    return;
  const float *keyMask =
      p.mask->data ? p.maskAdd.data() + b * p.Tk + j0 : nullptr;
  const auto &bs = p.biasStrides;
  std::pair<int64_t, int64_t> spans[8];
  for (int64_t i = 0; i < ni; ++i) {
    float *si = s + i * kBlockK;
    int64_t gi = i0 + i;
    // What the pattern hides: outside the row's intervals, or key by key.
    int n = whole ? -2 : p.pattern.rowIntervals(h, gi, j0, j0 + nj, spans, 8);
    if (n == -2) {
      std::fill(si + nj, si + kBlockK, -INFINITY);
    } else if (n >= 0) {
      int64_t at = 0;
      for (int e = 0; e < n; ++e) {
        std::fill(si + at, si + (spans[e].first - j0), -INFINITY);
        at = spans[e].second - j0;
      }
      std::fill(si + at, si + kBlockK, -INFINITY);
    } else {
      for (int64_t j = 0; j < kBlockK; ++j)
        if (j >= nj || !p.pattern.visible(h, gi, j0 + j))
          si[j] = -INFINITY;
    }
    // The key padding mask adds 0 or -inf.
    if (keyMask)
      for (int64_t j = 0; j < nj; ++j)
        si[j] += keyMask[j];
    if (p.bias->data) {
      const float *bias =
          p.bias->as<float>() + b * bs[0] + h * bs[1] + gi * bs[2];
      for (int64_t j = 0; j < nj; ++j)
        si[j] += bias[(j0 + j) * bs[3]];
    }
  }
}

/// out[d][j] = rows[j][d] for `n` rows of width D (zeros past the end).
void transposeBlock(const float *rows, int64_t stride, int64_t n, int64_t D,
                    float *out) {
  std::fill(out, out + D * kBlockK, 0.0f);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t d = 0; d < D; ++d)
      out[d * kBlockK + j] = rows[j * stride + d];
}

/// kt[d][j] = k_{j0 + j}[d].
void transposeKeys(const Problem &p, int64_t b, int64_t hk, int64_t j0,
                   int64_t nj, float *kt) {
  transposeBlock(p.k + (b * p.Tk + j0) * p.kRow() + hk * p.D, p.kRow(), nj, p.D,
                 kt);
}

/// acc[i][:] += sum_j P[i][j] v_j for one block.
void accumulatePV(const Problem &p, int64_t b, int64_t hk, int64_t ni,
                  int64_t j0, int64_t nj, const float *P, float *acc) {
  attention::blockGemm(p.isa, ni, p.Dv, nj, 1.0f, P, kBlockK, 1,
                       p.v + (b * p.Tk + j0) * p.vRow() + hk * p.Dv, p.vRow(),
                       acc, p.Dv, /*accumulate=*/true);
}

Problem problemOf(const KernelContext &c, int q, int k, int v, int mask,
                  int bias) {
  const Shape &qs = *c.in[q].shape, &ks = *c.in[k].shape, &vs = *c.in[v].shape;
  Problem p;
  p.B = qs[0];
  p.Tq = qs[1];
  p.Tk = ks[1];
  const kart::AttentionAttrs *attrs = c.kernel.attrs_as_AttentionAttrs();
  p.H = attrs->heads();
  p.Hkv = attrs->kv_heads();
  p.pattern = cpu::attentionPattern(c.kernel, p.Tq, p.Tk);
  p.D = qs[2] / p.H;
  p.Dv = vs[2] / p.Hkv;
  p.scale = static_cast<float>(attrs->scale());
  p.q = c.in[q].as<float>();
  p.k = c.in[k].as<float>();
  p.v = c.in[v].as<float>();
  p.mask = &c.in[mask];
  p.bias = &c.in[bias];
  if (p.mask->data) {
    p.maskAdd.resize(static_cast<size_t>(p.B * p.Tk));
    for (int64_t i = 0; i < p.B * p.Tk; ++i)
      p.maskAdd[i] = maskAt(*p.mask, i) != 0 ? 0.0f : -INFINITY;
  }
  if (p.bias->data) {
    // Row-major strides of the bias broadcast to [B, H, Tq, Tk].
    const Shape &s = *p.bias->shape;
    p.biasStrides.assign(4, 0);
    int64_t st = 1;
    for (int64_t d = static_cast<int64_t>(s.size()) - 1; d >= 0; --d) {
      size_t fd = 4 - (s.size() - d);
      p.biasStrides[fd] = s[d] == 1 ? 0 : st;
      st *= s[d];
    }
  }
  return p;
}

} // namespace

Status kiln::runtime::flashAttention(KernelContext &c) {
  Problem p = problemOf(c, 0, 1, 2, 3, 4);
  attention::BlockLists lists =
      attention::makeBlockLists(p.pattern, kBlockQ, kBlockK);
  float *o = c.out[0].as<float>();
  float *lse = c.out.size() > 1 ? c.out[1].as<float>() : nullptr;
  int64_t group = p.H / p.Hkv;
  int64_t qBlocks = lists.qBlocks, kBlocks = lists.kBlocks;
  // Each key block some query block visits, transposed once: [D][kBlockK]
  // per (batch, key/value head, key block), in the order of `slot`.
  std::vector<int64_t> slot(static_cast<size_t>(kBlocks), -1);
  int64_t packed = 0;
  for (const attention::BlockRows &rows : lists.lists)
    for (int32_t kb : rows.cols)
      if (slot[kb] < 0)
        slot[kb] = packed++;
  std::vector<int64_t> order(static_cast<size_t>(packed));
  for (int64_t kb = 0; kb < kBlocks; ++kb)
    if (slot[kb] >= 0)
      order[slot[kb]] = kb;
  int64_t tile = p.D * kBlockK;
  // Every element is written by transposeKeys (zeros past the last key).
  // Kept in the function state's workspace: the same memory every call.
  size_t packFloats = static_cast<size_t>(p.B * p.Hkv * packed * tile);
  std::unique_ptr<float[]> own;
  float *kpack;
  if (c.workspace) {
    kpack = c.workspace->floats(packFloats);
  } else {
    own.reset(new float[packFloats]);
    kpack = own.get();
  }
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t bh = 0; bh < p.B * p.Hkv; ++bh)
    for (int64_t e = 0; e < packed; ++e) {
      int64_t j0 = order[e] * kBlockK, nj = std::min(kBlockK, p.Tk - j0);
      transposeKeys(p, bh / p.Hkv, bh % p.Hkv, j0, nj,
                    kpack + (bh * packed + e) * tile);
    }
  int64_t tasks = p.B * p.H * qBlocks;
#pragma omp parallel
  {
    std::vector<float> s(kBlockQ * kBlockK), acc(kBlockQ * p.Dv), m(kBlockQ),
        l(kBlockQ);
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < tasks; ++t) {
      int64_t qb = t % qBlocks, h = (t / qBlocks) % p.H,
              b = t / (qBlocks * p.H), hk = h / group;
      const attention::BlockRows &list = lists.of(h);
      int64_t i0 = qb * kBlockQ, ni = std::min(kBlockQ, p.Tq - i0);
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill(m.begin(), m.end(), -INFINITY);
      std::fill(l.begin(), l.end(), 0.0f);
      const float *kt = kpack + (b * p.Hkv + hk) * packed * tile;
      for (int64_t e = list.rowStart[qb]; e < list.rowStart[qb + 1]; ++e) {
        int64_t kb = list.cols[e];
        int64_t j0 = kb * kBlockK, nj = std::min(kBlockK, p.Tk - j0);
        if (e + 1 < list.rowStart[qb + 1]) {
          int64_t next = list.cols[e + 1], jn = next * kBlockK;
          prefetchRows(kt + slot[next] * tile, 1, 0, tile * sizeof(float));
          prefetchRows(p.v + (b * p.Tk + jn) * p.vRow() + hk * p.Dv,
                       std::min(kBlockK, p.Tk - jn), p.vRow(),
                       p.Dv * sizeof(float));
        }
        blockScores(p, b, h, i0, ni, j0, nj, kt + slot[kb] * tile, s.data());
        attention::onlineSoftmax(p.isa, ni, p.Dv, s.data(), m.data(), l.data(),
                                 acc.data());
        accumulatePV(p, b, hk, ni, j0, nj, s.data(), acc.data());
      }
      for (int64_t i = 0; i < ni; ++i) {
        float *oi = o + (b * p.Tq + i0 + i) * p.oRow() + h * p.Dv;
        float inv = l[i] > 0 ? 1.0f / l[i] : 0.0f; // all masked: zeros
        for (int64_t d = 0; d < p.Dv; ++d)
          oi[d] = acc[i * p.Dv + d] * inv;
        if (lse)
          lse[(b * p.H + h) * p.Tq + i0 + i] =
              l[i] > 0 ? m[i] + std::log(l[i]) : -INFINITY;
      }
    }
  }
  return Status::ok();
}

namespace {

/// out[i] = sum_e g[i][e] * o[i][e] for n rows of d values, `ld` apart: the
/// backward's D = rowsum(dO * O), vectorized for the CPU it runs on.
__attribute__((target_clones("avx512f", "avx2", "default"))) void
rowDots(int64_t n, int64_t d, const float *g, const float *o, int64_t ld,
        float *out) {
  for (int64_t i = 0; i < n; ++i) {
    const float *gi = g + i * ld, *oi = o + i * ld;
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t e = 0; e < d; ++e)
      sum += gi[e] * oi[e];
    out[i] = sum;
  }
}

/// The backward of one (query block, key block) pair for head h, given
/// P and dS (attention/BlockSoftmax.h): dV += Pᵀ dO, dQ += dS K,
/// dK += dSᵀ Q.
void blockBackward(const Problem &p, int64_t b, int64_t h, int64_t i0,
                   int64_t ni, int64_t j0, int64_t nj, const float *pr,
                   const float *ds, const float *g, float *dq, float *dkAcc,
                   float *dvAcc) {
  int64_t hk = h / (p.H / p.Hkv);
  const float *k = p.k + (b * p.Tk + j0) * p.kRow() + hk * p.D;
  const float *q = p.q + (b * p.Tq + i0) * p.qRow() + h * p.D;
  const float *gi = g + i0 * p.oRow();
  // dV[j] += sum_i P[i][j] dO[i]: P read transposed.
  attention::blockGemm(p.isa, nj, p.Dv, ni, 1.0f, pr, 1, kBlockK, gi, p.oRow(),
                       dvAcc, p.Dv, true);
  // dQ[i] += sum_j dS[i][j] K[j].
  attention::blockGemm(p.isa, ni, p.D, nj, 1.0f, ds, kBlockK, 1, k, p.kRow(),
                       dq + i0 * p.qRow(), p.qRow(), true);
  // dK[j] += sum_i dS[i][j] Q[i].
  attention::blockGemm(p.isa, nj, p.D, ni, 1.0f, ds, 1, kBlockK, q, p.qRow(),
                       dkAcc, p.D, true);
}

} // namespace

Status kiln::runtime::flashAttentionGrad(KernelContext &c) {
  // in [grad, q, k, v, out, lse, mask, bias]
  Problem p = problemOf(c, 1, 2, 3, 6, 7);
  // For each key block, the query blocks that visit it (one list shared by
  // every head when the pattern is uniform).
  attention::BlockLists visitors =
      attention::makeBlockLists(p.pattern, kBlockQ, kBlockK).transposed();
  const float *g = c.in[0].as<float>(), *o = c.in[4].as<float>(),
              *lse = c.in[5].as<float>();
  float *dq = c.out[0].as<float>(), *dk = c.out[1].as<float>(),
        *dv = c.out[2].as<float>();
  std::fill(dq, dq + c.out[0].numel(), 0.0f);
  int64_t group = p.H / p.Hkv;
#pragma omp parallel
  {
    std::vector<float> kt(p.D * kBlockK), vt(p.Dv * kBlockK),
        s(kBlockQ * kBlockK), dp(kBlockQ * kBlockK), pr(kBlockQ * kBlockK),
        ds(kBlockQ * kBlockK), dkAcc(kBlockK * p.D), dvAcc(kBlockK * p.Dv),
        Drow(group * p.Tq);
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < p.B; ++b)
      for (int64_t hk = 0; hk < p.Hkv; ++hk) {
        // D = rowsum(dO * O) for every head of the group.
        for (int64_t h = hk * group; h < (hk + 1) * group; ++h)
          rowDots(p.Tq, p.Dv, g + b * p.Tq * p.oRow() + h * p.Dv,
                  o + b * p.Tq * p.oRow() + h * p.Dv, p.oRow(),
                  Drow.data() + (h - hk * group) * p.Tq);
        for (int64_t kb = 0; kb < visitors.qBlocks; ++kb) {
          int64_t j0 = kb * kBlockK, nj = std::min(kBlockK, p.Tk - j0);
          std::fill(dkAcc.begin(), dkAcc.end(), 0.0f);
          std::fill(dvAcc.begin(), dvAcc.end(), 0.0f);
          transposeKeys(p, b, hk, j0, nj, kt.data());
          transposeBlock(p.v + (b * p.Tk + j0) * p.vRow() + hk * p.Dv, p.vRow(),
                         nj, p.Dv, vt.data());
          for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
            const attention::BlockRows &byKey = visitors.of(h);
            for (int64_t e = byKey.rowStart[kb]; e < byKey.rowStart[kb + 1];
                 ++e) {
              int64_t qb = byKey.cols[e];
              int64_t i0 = qb * kBlockQ, ni = std::min(kBlockQ, p.Tq - i0);
              const float *gb = g + b * p.Tq * p.oRow() + h * p.Dv;
              if (e + 1 < byKey.rowStart[kb + 1]) {
                // The next visitor's query, output-gradient and dQ rows.
                int64_t in = byKey.cols[e + 1] * kBlockQ,
                        rows = std::min(kBlockQ, p.Tq - in);
                prefetchRows(p.q + (b * p.Tq + in) * p.qRow() + h * p.D, rows,
                             p.qRow(), p.D * sizeof(float));
                prefetchRows(gb + in * p.oRow(), rows, p.oRow(),
                             p.Dv * sizeof(float));
                prefetchRows(dq + (b * p.Tq + in) * p.qRow() + h * p.D, rows,
                             p.qRow(), p.D * sizeof(float));
              }
              blockScores(p, b, h, i0, ni, j0, nj, kt.data(), s.data());
              // dP = dO Vᵀ.
              attention::blockGemm(p.isa, ni, kBlockK, p.Dv, 1.0f,
                                   gb + i0 * p.oRow(), p.oRow(), 1, vt.data(),
                                   kBlockK, dp.data(), kBlockK, false);
              attention::probabilities(p.isa, ni, p.scale, s.data(), dp.data(),
                                       lse + (b * p.H + h) * p.Tq + i0,
                                       Drow.data() + (h - hk * group) * p.Tq +
                                           i0,
                                       pr.data(), ds.data());
              blockBackward(p, b, h, i0, ni, j0, nj, pr.data(), ds.data(), gb,
                            dq + b * p.Tq * p.qRow() + h * p.D, dkAcc.data(),
                            dvAcc.data());
            }
          }
          for (int64_t j = 0; j < nj; ++j) {
            std::copy(dkAcc.begin() + j * p.D, dkAcc.begin() + (j + 1) * p.D,
                      dk + (b * p.Tk + j0 + j) * p.kRow() + hk * p.D);
            std::copy(dvAcc.begin() + j * p.Dv, dvAcc.begin() + (j + 1) * p.Dv,
                      dv + (b * p.Tk + j0 + j) * p.vRow() + hk * p.Dv);
          }
        }
      }
  }
  return Status::ok();
}
