//===- Pattern.h - which keys each query sees ------------------*- C++ -*-===//
//-*-===//
//
// An attention pattern says which (query, key) pairs are visible. The
// blocked kernels (attention/Flash.cpp) never look at it directly: they
// iterate over the block list it produces — for each (batch, head) and each
// query block, the key blocks with at least one visible pair — and mask
// inside a block with its predicate only where the block is not wholly
// visible. Dense and causal attention are the patterns that exist today;
// sliding-window and block-sparse patterns are new kinds here, and nothing
// in the kernels changes for them.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_ATTENTION_PATTERN_H
#define KILN_RUNTIME_ATTENTION_PATTERN_H

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kiln::runtime::attention {

struct Pattern {
  enum class Kind {
    Dense,  // every key
    Causal, // keys up to the query's own position
  };
  Kind kind = Kind::Dense;
  /// Query i sits at key position i + offset: Tk - Tq for causal attention,
  /// so the last query sees the last key (decoding with a cache).
  int64_t offset = 0;

  static Pattern dense() { return {}; }
  static Pattern causal(int64_t Tq, int64_t Tk) {
    return {Kind::Causal, Tk - Tq};
  }

  /// The in-block predicate: may query `q` see key `k`?
  bool visible(int64_t q, int64_t k) const {
    return kind == Kind::Dense || k <= q + offset;
  }
  /// Whether some / every pair of queries [q0, q1) and keys [k0, k1) is
  /// visible (both ranges non-empty).
  bool anyVisible(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const;
  bool allVisible(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const;
  /// True when the pattern is the same for every batch row and head.
  bool uniform() const { return true; }
};

/// The key blocks each query block visits, in CSR form: for query block qb
/// the key blocks cols[rowStart[qb] .. rowStart[qb + 1]), ascending.
struct BlockRows {
  std::vector<int64_t> rowStart, cols;
};

/// Block lists for Tq queries and Tk keys in blocks of blockQ x blockK, per
/// (batch, head); one shared list when the pattern is uniform.
struct BlockLists {
  int64_t blockQ = 0, blockK = 0, qBlocks = 0, kBlocks = 0;
  int64_t heads = 1;
  std::vector<BlockRows> lists; // one, or batch * heads
  const BlockRows &of(int64_t b, int64_t h) const {
    return lists.size() == 1 ? lists[0]
                             : lists[static_cast<size_t>(b * heads + h)];
  }
  /// For each key block, the query blocks that visit it (the backward
  /// pass's order), for the list of (b, h).
  std::vector<std::vector<int64_t>> visitors(int64_t b, int64_t h) const;
};

BlockLists makeBlockLists(const Pattern &pattern, int64_t Tq, int64_t Tk,
                          int64_t blockQ, int64_t blockK, int64_t batch = 1,
                          int64_t heads = 1);

} // namespace kiln::runtime::attention

#endif
