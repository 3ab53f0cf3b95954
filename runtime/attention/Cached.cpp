//===- Cached.cpp - attention over a key/value cache ----------------------===//
//
// kiln.cached_attention (ir/KilnOps.td gives its semantics): the new tokens'
// queries attend to the cached keys of earlier positions and to the new
// keys, then the new keys and values are stored in the cache. Decoding
// steps have one query per row, so the kernel goes row by row, one task per
// (batch row, head); a prompt processed into an empty cache is exactly the
// uncached causal attention, which the blocked flash kernel computes.
//
//===----------------------------------------------------------------------===//
#include "runtime/Kernels.h"
#include "runtime/Vector.h"
#include "runtime/attention/BlockGemm.h"
#include "runtime/attention/RelativeBucket.h"
#include "runtime/cpu/KernelUtil.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

using namespace kiln;
using namespace kiln::runtime;
using namespace kiln::runtime::cpu;

namespace {

struct CacheProblem {
  int64_t B, T, S, H, Hkv, D, Dv, window;
  /// A window's cache rolls when it has at least as many slots; otherwise
  /// (fewer slots than the window) every position needs its own slot.
  bool rolls;
  float scale;
  const float *q, *k, *v;
  float *kc, *vc, *o;
  const int32_t *pos, *len;
  /// T5's relative position bias, [buckets, H], or null.
  const float *relative = nullptr;
  int64_t relativeBuckets = 0, relativeMaxDistance = 0;
  bool relativeBidirectional = false;
  int64_t kRow() const { return Hkv * D; }
  int64_t vRow() const { return Hkv * Dv; }
  /// The cache slot of position p.
  int64_t slot(int64_t p) const { return rolls ? p % S : p; }
};

CacheProblem problemOf(const KernelContext &c) {
  const kart::AttentionAttrs *a = c.kernel.attrs_as_AttentionAttrs();
  const Shape &qs = *c.in[0].shape, &ks = *c.in[3].shape, &vs = *c.in[4].shape;
  CacheProblem p;
  p.B = qs[0];
  p.T = qs[1];
  p.S = ks[1];
  p.H = a->heads();
  p.Hkv = a->kv_heads();
  p.D = qs[2] / p.H;
  p.Dv = vs[2] / p.Hkv;
  p.window = a->pattern()->kind() == kart::PatternKind::SlidingWindow
                 ? a->pattern()->window()
                 : 0;
  p.rolls = p.window > 0 && p.S >= p.window;
  p.scale = static_cast<float>(a->scale());
  p.q = c.in[0].as<float>();
  p.k = c.in[1].as<float>();
  p.v = c.in[2].as<float>();
  p.kc = c.in[3].as<float>();
  p.vc = c.in[4].as<float>();
  p.pos = c.in[5].as<int32_t>();
  p.len = c.in[6].as<int32_t>();
  p.o = c.out[0].as<float>();
  if (c.in.size() > 7 && c.in[7].data) {
    const kart::RelativePositionBucketAttrs *r = a->relative();
    p.relative = c.in[7].as<float>();
    p.relativeBuckets = r->buckets();
    p.relativeMaxDistance = r->max_distance();
    p.relativeBidirectional = r->bidirectional();
  }
  return p;
}

/// Each row's real tokens sit at consecutive positions that fit the cache.
Status checkRows(const KernelContext &c, const CacheProblem &p) {
  for (int64_t b = 0; b < p.B; ++b) {
    int64_t n = p.len[b], p0 = p.T > 0 ? p.pos[b * p.T] : 0;
    std::string row = "row " + std::to_string(b) + ": ";
    if (n < 0 || n > p.T)
      return fail(c.kernel, row + "length " + std::to_string(n) +
                                " is outside [0, " + std::to_string(p.T) + "]");
    if (n == 0)
      continue;
    if (p0 < 0)
      return fail(c.kernel,
                  row + "position " + std::to_string(p0) + " is negative");
    for (int64_t t = 1; t < n; ++t)
      if (p.pos[b * p.T + t] != p0 + t)
        return fail(c.kernel, row + "token " + std::to_string(t) +
                                  " is at position " +
                                  std::to_string(p.pos[b * p.T + t]) +
                                  ", expected " + std::to_string(p0 + t));
    if (!p.rolls && p0 + n > p.S)
      return fail(c.kernel, row + "positions up to " +
                                std::to_string(p0 + n - 1) +
                                " do not fit a cache of " +
                                std::to_string(p.S) + " positions");
  }
  return Status::ok();
}

// The row kernel, compiled for each instruction set and chosen by
// attention::bestIsa(); the reference path runs the baseline build.
#pragma GCC push_options
#pragma GCC target("avx512f,fma,tune=skylake-avx512")
namespace avx512 {
#include "runtime/attention/CachedRow.inc"
} // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,tune=haswell")
namespace avx2 {
#include "runtime/attention/CachedRow.inc"
} // namespace avx2
#pragma GCC pop_options

namespace baseline {
#include "runtime/attention/CachedRow.inc"
} // namespace baseline

using RowKernel = void (*)(const CacheProblem &, int64_t, int64_t,
                           std::vector<float> &);

/// Every (row, head) of a decoding step, one task each.
void attendAll(const CacheProblem &p, RowKernel row) {
  // A decoding step near the start is too little work to wake threads for.
  int64_t work = 0;
  for (int64_t b = 0; b < p.B; ++b)
    work += p.len[b] * (p.pos[b * p.T] + p.len[b]) * p.H * (p.D + p.Dv);
#pragma omp parallel if (work >= kParallelWork)
  {
    std::vector<float> s;
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t b = 0; b < p.B; ++b)
      for (int64_t h = 0; h < p.H; ++h)
        row(p, b, h, s);
  }
}

/// Stores the real tokens' keys and values (the last S of them for a
/// rolling cache) and zeroes the padding rows' results.
void storeAndClear(const CacheProblem &p) {
#pragma omp parallel for schedule(                                             \
    static) if (p.B * p.T * (p.kRow() + p.vRow()) >= kParallelWork)
  for (int64_t b = 0; b < p.B; ++b) {
    int64_t n = p.len[b], p0 = n > 0 ? p.pos[b * p.T] : 0;
    for (int64_t t = std::max<int64_t>(0, n - p.S); t < n; ++t) {
      int64_t slot = p.slot(p0 + t);
      std::memcpy(p.kc + (b * p.S + slot) * p.kRow(),
                  p.k + (b * p.T + t) * p.kRow(), p.kRow() * sizeof(float));
      std::memcpy(p.vc + (b * p.S + slot) * p.vRow(),
                  p.v + (b * p.T + t) * p.vRow(), p.vRow() * sizeof(float));
    }
    std::fill(p.o + (b * p.T + n) * p.H * p.Dv,
              p.o + (b + 1) * p.T * p.H * p.Dv, 0.0f);
  }
}

} // namespace

Status kiln::runtime::cachedAttentionReference(KernelContext &c) {
  CacheProblem p = problemOf(c);
  if (Status s = checkRows(c, p); !s)
    return s;
  attendAll(p, baseline::attendRow);
  storeAndClear(p);
  return Status::ok();
}

bool kiln::runtime::cachedAttention(KernelContext &c, Status &status) {
  CacheProblem p = problemOf(c);
  // The blocked kernel has no relative position bias (T5's decoder): its
  // prompts take the row path too.
  bool fresh = p.T > 1 && !p.relative;
  for (int64_t b = 0; b < p.B && fresh; ++b)
    fresh = p.len[b] == 0 || p.pos[b * p.T] == 0;
  if (status = checkRows(c, p); !status)
    return true;
  if (!fresh) {
    // Decoding steps: row by row, with the widest vectors the CPU has.
    using attention::Isa;
    Isa isa = attention::bestIsa();
    attendAll(p, isa == Isa::Avx512 ? avx512::attendRow
                 : isa == Isa::Avx2 ? avx2::attendRow
                                    : baseline::attendRow);
    storeAndClear(p);
    return true;
  }
  // A prompt into an empty cache: causal attention among the new tokens.
  // Padding only follows a row's real tokens, which never see it.
  KernelContext flash{c.kernel,     {c.in[0], c.in[1], c.in[2], View{}, View{}},
                      {c.out[0]},   c.symbols,
                      c.primitives, c.workspace};
  if (status = flashAttention(flash); !status)
    return true;
  storeAndClear(p);
  return true;
}
