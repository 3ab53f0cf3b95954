//===- Pattern.h - which keys each query sees ------------------*- C++ -*-===//
//
// An attention pattern (PatternSpec.h) bound to the lengths of one call:
// Tq queries, Tk keys and the number of heads. The blocked kernels
// (attention/Flash.cpp) never test a pattern pair by pair where they can
// avoid it: they iterate over the block list it produces — for each head
// and each query block, the key blocks with at least one visible pair — and
// apply the in-block predicate only where a block is not wholly visible.
// The reference kernels apply `visible` element by element: the oracle.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_ATTENTION_PATTERN_H
#define KILN_RUNTIME_ATTENTION_PATTERN_H

#include "runtime/attention/PatternSpec.h"

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace kiln::runtime::attention {

class Pattern {
public:
  Pattern() = default;
  /// Binds `spec` to Tq queries, Tk keys and `heads` query heads (the
  /// random blocks of block_sparse differ per head).
  Pattern(const PatternSpec &spec, int64_t Tq, int64_t Tk, int64_t heads);

  static Pattern dense(int64_t Tq, int64_t Tk) {
    return Pattern(PatternSpec(), Tq, Tk, 1);
  }
  static Pattern causal(int64_t Tq, int64_t Tk) {
    PatternSpec s;
    s.causal = true;
    return Pattern(s, Tq, Tk, 1);
  }

  const PatternSpec &spec() const { return s; }
  int64_t queries() const { return Tq; }
  int64_t keys() const { return Tk; }
  int64_t numHeads() const { return heads; }

  /// The in-block predicate: may query row `i` of head `h` see key `j`?
  bool visible(int64_t h, int64_t i, int64_t j) const;
  /// Whether some / every pair of query rows [q0, q1) and keys [k0, k1)
  /// is visible for head h (both ranges non-empty). anyVisible is exact;
  /// allVisible may say false for a wholly visible rectangle that mixes
  /// global tokens with the pattern (the kernel then masks it pair by pair).
  bool anyVisible(int64_t h, int64_t q0, int64_t q1, int64_t k0,
                  int64_t k1) const;
  bool allVisible(int64_t h, int64_t q0, int64_t q1, int64_t k0,
                  int64_t k1) const;
  /// The keys of [k0, k1) that query row i of head h sees, as at most
  /// `max` ascending, disjoint intervals [first, second) written to `out`:
  /// returns their count, or -1 when the row needs more (strided and fixed
  /// patterns), and the caller tests `visible` key by key. What the kernels
  /// use to mask a block the pattern cuts, a row at a time.
  int rowIntervals(int64_t h, int64_t i, int64_t k0, int64_t k1,
                   std::pair<int64_t, int64_t> *out, int max) const;
  /// True when every head sees the same pattern (no random blocks).
  bool uniform() const {
    return !(s.kind == PatternKind::BlockSparse && s.random > 0);
  }
  /// Key ranges [from, to) that may hold keys visible to query rows
  /// [q0, q1) of head h, ascending (a superset; anyVisible decides).
  std::vector<std::pair<int64_t, int64_t>> candidates(int64_t h, int64_t q0,
                                                      int64_t q1) const;

private:
  bool baseVisible(int64_t h, int64_t p, int64_t j) const;
  bool blockVisible(int64_t h, int64_t I, int64_t J) const;
  bool baseAny(int64_t h, int64_t p0, int64_t p1, int64_t k0, int64_t k1) const;
  bool baseAll(int64_t h, int64_t p0, int64_t p1, int64_t k0, int64_t k1) const;

  PatternSpec s;
  int64_t Tq = 0, Tk = 0, heads = 1;
  int64_t offset = 0; // query row i sits at position i + offset
  // block_sparse: the random key blocks of query block I for head h,
  // randomStart[h * rows + I - firstRow] .. +1 into randomBlocks (sorted).
  int64_t firstRow = 0, rows = 0;
  std::vector<int64_t> randomStart, randomBlocks;
};

/// The key blocks each query block visits, in CSR form: for query block qb
/// the key blocks cols[rowStart[qb] .. rowStart[qb + 1]), ascending.
struct BlockRows {
  std::vector<int64_t> rowStart;
  std::vector<int32_t> cols;
  int64_t count() const { return static_cast<int64_t>(cols.size()); }
};

/// Block lists for Tq queries and Tk keys in blocks of blockQ x blockK, per
/// head; one shared list when the pattern is the same for every head.
struct BlockLists {
  int64_t blockQ = 0, blockK = 0, qBlocks = 0, kBlocks = 0;
  int64_t heads = 1;
  std::vector<BlockRows> lists; // one, or one per head
  const BlockRows &of(int64_t h) const {
    return lists.size() == 1 ? lists[0] : lists[static_cast<size_t>(h)];
  }
  /// The same lists by key block: for each key block, the query blocks that
  /// visit it (the backward pass's order).
  BlockLists transposed() const;
  /// Blocks computed over all heads, and the dense causal-free count
  /// (qBlocks * kBlocks * heads): their ratio is the density.
  int64_t computed() const;
};

BlockLists makeBlockLists(const Pattern &pattern, int64_t blockQ,
                          int64_t blockK);

} // namespace kiln::runtime::attention

#endif
