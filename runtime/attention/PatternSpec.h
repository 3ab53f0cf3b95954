//===- PatternSpec.h - the attention patterns kiln knows -------*- C++ -*-===//
//
// One table of sparse-attention patterns, read by every layer that names
// one: the language (`pattern = sliding_window(256)`), the command line
// (`--attention=sliding_window:256`), the dialect's `#kiln.pattern`
// attribute, the artifact writer and loader, and the kernels. Header-only so
// that the compiler can check a pattern exactly as the runtime will, without
// linking the runtime.
//
// Semantics (query position p, key position j, 0-based; under `causal`
// p = i + Tk - Tq for query row i, else p = i):
//
//   causal              only j <= p, whatever else the pattern says
//   global_tokens = g   keys j < g are seen by every query, queries p < g
//                       see every key (an option of every pattern)
//   sliding_window(w)   p - w < j <= p (causal), |p - j| < w (otherwise)
//   block_sparse(block = b, local = l, global = G, random = r, seed = s)
//                       with I = p div b, J = j div b: |I - J| <= l, or
//                       J < G, or I < G, or J is one of the r random key
//                       blocks of query block I and head h
//                       (randomKeyBlocks below)
//   strided(stride = s) p - j < s, or (p - j) mod s == 0
//   fixed(stride = s, summary = c)
//                       j div s == p div s, or j mod s >= s - c
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_ATTENTION_PATTERNSPEC_H
#define KILN_RUNTIME_ATTENTION_PATTERNSPEC_H

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::runtime::attention {

enum class PatternKind : uint8_t {
  Dense = 0,
  SlidingWindow = 1,
  BlockSparse = 2,
  Strided = 3,
  Fixed = 4,
};

/// A pattern with its parameters; the fields a kind does not use are zero.
struct PatternSpec {
  PatternKind kind = PatternKind::Dense;
  bool causal = false;
  int64_t window = 0;
  int64_t block = 0, local = 0, globalBlocks = 0, random = 0, seed = 0;
  int64_t stride = 0, summary = 0;
  int64_t globalTokens = 0;

  bool operator==(const PatternSpec &o) const {
    return kind == o.kind && causal == o.causal && window == o.window &&
           block == o.block && local == o.local &&
           globalBlocks == o.globalBlocks && random == o.random &&
           seed == o.seed && stride == o.stride && summary == o.summary &&
           globalTokens == o.globalTokens;
  }
  /// Whether the pattern limits which keys a query sees beyond causality.
  bool sparse() const {
    return kind != PatternKind::Dense || globalTokens != 0;
  }
};

/// One parameter of a pattern kind, in the order positional arguments bind.
struct PatternParam {
  const char *name;
  int64_t PatternSpec::*field;
  bool required;
  int64_t min, max;
  const char *meaning;
};

struct PatternKindInfo {
  PatternKind kind;
  const char *name;
  std::vector<PatternParam> params; // global_tokens excluded: every kind has it
};

/// Sizes are bounded so that no pattern read from a file can make the
/// kernels' tables (random blocks per head and query block) unbounded.
constexpr int64_t kMaxPatternSize = int64_t(1) << 40;
constexpr int64_t kMinSparseBlock = 8, kMaxSparseBlock = 4096;
constexpr int64_t kMaxRandomBlocks = 64;

inline const std::vector<PatternKindInfo> &patternKinds() {
  using S = PatternSpec;
  static const std::vector<PatternKindInfo> kinds = {
      {PatternKind::Dense, "dense", {}},
      {PatternKind::SlidingWindow,
       "sliding_window",
       {{"window", &S::window, true, 1, kMaxPatternSize,
         "keys within this distance of the query"}}},
      {PatternKind::BlockSparse,
       "block_sparse",
       {{"block", &S::block, true, kMinSparseBlock, kMaxSparseBlock,
         "block size in tokens, a power of two"},
        {"local", &S::local, false, 0, kMaxPatternSize,
         "neighbouring key blocks on each side"},
        {"global", &S::globalBlocks, false, 0, kMaxPatternSize,
         "leading blocks that see and are seen by every block"},
        {"random", &S::random, false, 0, kMaxRandomBlocks,
         "random key blocks per query block and head"},
        {"seed", &S::seed, false, 0, kMaxPatternSize,
         "seed of the random blocks (required with random)"}}},
      {PatternKind::Strided,
       "strided",
       {{"stride", &S::stride, true, 1, kMaxPatternSize,
         "the last `stride` keys and every stride-th key before"}}},
      {PatternKind::Fixed,
       "fixed",
       {{"stride", &S::stride, true, 1, kMaxPatternSize,
         "the query's own stride-long segment"},
        {"summary", &S::summary, true, 1, kMaxPatternSize,
         "the last `summary` keys of every segment"}}},
  };
  return kinds;
}

inline const PatternParam &globalTokensParam() {
  static const PatternParam p{
      "global_tokens", &PatternSpec::globalTokens,
      false,           0,
      kMaxPatternSize, "leading tokens that see and are seen by all"};
  return p;
}

inline const PatternKindInfo *findPatternKind(std::string_view name) {
  for (const PatternKindInfo &k : patternKinds())
    if (name == k.name)
      return &k;
  return nullptr;
}

inline const PatternKindInfo &infoOf(PatternKind kind) {
  for (const PatternKindInfo &k : patternKinds())
    if (k.kind == kind)
      return k;
  return patternKinds().front();
}

/// The kinds, for messages: "dense, sliding_window, ...".
inline std::string patternKindList() {
  std::string s;
  for (const PatternKindInfo &k : patternKinds())
    s += (s.empty() ? "" : ", ") + std::string(k.name);
  return s;
}

/// Why a spec is not a valid pattern ("" when it is): each message names
/// the parameter. `given` lists the parameters that were written, so that
/// a missing required one (or a random count without a seed) is reported;
/// pass nullptr for a spec read back from an artifact or attribute.
inline std::string
checkPattern(const PatternSpec &s,
             const std::vector<std::string> *given = nullptr) {
  auto wasGiven = [&](const char *n) {
    if (!given)
      return true;
    for (const std::string &g : *given)
      if (g == n)
        return true;
    return false;
  };
  const PatternKindInfo &info = infoOf(s.kind);
  if (info.kind != s.kind)
    return "unknown pattern kind " + std::to_string(static_cast<int>(s.kind));
  std::vector<const PatternParam *> params;
  for (const PatternParam &p : info.params)
    params.push_back(&p);
  params.push_back(&globalTokensParam());
  std::string where = std::string(info.name) + ": ";
  for (const PatternParam *p : params) {
    int64_t v = s.*(p->field);
    if (p->required && !wasGiven(p->name))
      return where + "'" + p->name + "' is required (" + p->meaning + ")";
    if (v < p->min || v > p->max)
      return where + "'" + p->name + "' must be " +
             (p->min == 1 && p->max == kMaxPatternSize ? std::string("positive")
              : p->min == 0 && p->max == kMaxPatternSize
                  ? std::string("zero or more")
                  : "between " + std::to_string(p->min) + " and " +
                        std::to_string(p->max)) +
             ", got " + std::to_string(v);
  }
  // The fields of other kinds stay zero, so that equal patterns compare
  // equal and an artifact cannot smuggle parameters in.
  const int64_t PatternSpec::*all[] = {
      &PatternSpec::window,       &PatternSpec::block,  &PatternSpec::local,
      &PatternSpec::globalBlocks, &PatternSpec::random, &PatternSpec::seed,
      &PatternSpec::stride,       &PatternSpec::summary};
  for (const int64_t PatternSpec::*f : all) {
    bool used = false;
    for (const PatternParam *p : params)
      used = used || p->field == f;
    if (!used && s.*f != 0)
      return where + "sets a parameter this kind does not have";
  }
  if (s.kind == PatternKind::BlockSparse) {
    if (s.block & (s.block - 1))
      return where + "'block' must be a power of two, got " +
             std::to_string(s.block);
    if (s.random > 0 && !wasGiven("seed"))
      return where + "'random' blocks need a 'seed' (random = " +
             std::to_string(s.random) + ")";
  }
  if (s.kind == PatternKind::Fixed && s.summary > s.stride)
    return where + "'summary' (" + std::to_string(s.summary) +
           ") must not exceed 'stride' (" + std::to_string(s.stride) + ")";
  return "";
}

/// The spec as the language writes it: "sliding_window(window = 256,
/// global_tokens = 2)"; "dense" for the dense pattern.
inline std::string formatPattern(const PatternSpec &s) {
  const PatternKindInfo &info = infoOf(s.kind);
  std::string out = info.name, args;
  for (const PatternParam &p : info.params)
    if (p.required || s.*(p.field) != 0)
      args += (args.empty() ? "" : ", ") + std::string(p.name) + " = " +
              std::to_string(s.*(p.field));
  if (s.globalTokens)
    args += (args.empty() ? "" : ", ") + std::string("global_tokens = ") +
            std::to_string(s.globalTokens);
  return args.empty() ? out : out + "(" + args + ")";
}

/// The random key blocks of query block I for head h (block_sparse): key
/// blocks J in [0, limit) — limit = min(I + 1, keyBlocks) under causal,
/// keyBlocks otherwise — that are neither local (|I - J| <= local) nor
/// global (J < global). When at most `random` such blocks exist, all of
/// them; otherwise `random` distinct ones drawn in order from a SplitMix64
/// stream (state = seed ^ h * 0xA0761D6478BD642F ^ I * 0xE7037ED1A0B428DB;
/// each draw adds 0x9E3779B97F4A7C15 and mixes), J = draw mod limit,
/// skipping excluded and repeated blocks. Deterministic: a reference
/// implementation elsewhere (test/python/sparse_reference.py) reproduces it.
inline std::vector<int64_t> randomKeyBlocks(const PatternSpec &s, int64_t h,
                                            int64_t I, int64_t keyBlocks) {
  std::vector<int64_t> out;
  int64_t limit = s.causal ? std::min(I + 1, keyBlocks) : keyBlocks;
  auto excluded = [&](int64_t J) {
    return (J >= I - s.local && J <= I + s.local) || J < s.globalBlocks;
  };
  // Excluded blocks in [0, limit): the global prefix and the local band.
  int64_t lo =
      std::max<int64_t>(std::max<int64_t>(I - s.local, 0), s.globalBlocks);
  int64_t hi = std::min(I + s.local + 1, limit);
  int64_t candidates =
      limit - std::min(s.globalBlocks, limit) - std::max<int64_t>(0, hi - lo);
  if (candidates <= 0 || s.random <= 0)
    return out;
  if (candidates <= s.random) {
    for (int64_t J = 0; J < limit; ++J)
      if (!excluded(J))
        out.push_back(J);
    return out;
  }
  uint64_t state = static_cast<uint64_t>(s.seed) ^
                   static_cast<uint64_t>(h) * 0xA0761D6478BD642FULL ^
                   static_cast<uint64_t>(I) * 0xE7037ED1A0B428DBULL;
  while (static_cast<int64_t>(out.size()) < s.random) {
    state += 0x9E3779B97F4A7C15ULL;
    uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    int64_t J = static_cast<int64_t>(z % static_cast<uint64_t>(limit));
    bool seen = excluded(J);
    for (int64_t x : out)
      seen = seen || x == J;
    if (!seen)
      out.push_back(J);
  }
  return out;
}

} // namespace kiln::runtime::attention

#endif
