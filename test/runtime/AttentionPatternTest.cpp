//===- AttentionPatternTest.cpp - attention patterns and block lists ------===//
//
// The block lists and in-block predicates of runtime/attention/Pattern.h
// against brute force: every (query, key) pair of every block, for dense and
// causal patterns, sizes that are and are not multiples of the block size,
// square and non-square blocks, Tq < Tk (decoding) and Tq > Tk.
//
//===----------------------------------------------------------------------===//
#include "runtime/attention/Pattern.h"

#include <gtest/gtest.h>

#include <algorithm>

using namespace kiln::runtime::attention;

namespace {

struct Sizes {
  int64_t Tq, Tk, blockQ, blockK;
};

/// Brute force: which pairs of the block are visible.
void countVisible(const Pattern &p, int64_t q0, int64_t q1, int64_t k0,
                  int64_t k1, int64_t &visible, int64_t &total) {
  visible = total = 0;
  for (int64_t q = q0; q < q1; ++q)
    for (int64_t k = k0; k < k1; ++k) {
      ++total;
      visible += p.visible(q, k);
    }
}

void checkLists(const Pattern &p, const Sizes &s) {
  SCOPED_TRACE(::testing::Message()
               << "Tq=" << s.Tq << " Tk=" << s.Tk << " blocks " << s.blockQ
               << "x" << s.blockK);
  BlockLists l = makeBlockLists(p, s.Tq, s.Tk, s.blockQ, s.blockK, 2, 3);
  ASSERT_EQ(l.qBlocks, (s.Tq + s.blockQ - 1) / s.blockQ);
  ASSERT_EQ(l.kBlocks, (s.Tk + s.blockK - 1) / s.blockK);
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 3; ++h) {
      const BlockRows &rows = l.of(b, h);
      ASSERT_EQ(rows.rowStart.size(), static_cast<size_t>(l.qBlocks + 1));
      for (int64_t qb = 0; qb < l.qBlocks; ++qb) {
        int64_t q0 = qb * s.blockQ, q1 = std::min(s.Tq, q0 + s.blockQ);
        std::vector<int64_t> listed(rows.cols.begin() + rows.rowStart[qb],
                                    rows.cols.begin() + rows.rowStart[qb + 1]);
        ASSERT_TRUE(std::is_sorted(listed.begin(), listed.end()));
        for (int64_t kb = 0; kb < l.kBlocks; ++kb) {
          int64_t k0 = kb * s.blockK, k1 = std::min(s.Tk, k0 + s.blockK);
          int64_t visible, total;
          countVisible(p, q0, q1, k0, k1, visible, total);
          bool inList = std::count(listed.begin(), listed.end(), kb) == 1;
          // Listed exactly when some pair is visible: no visible pair is
          // skipped, no empty block computed.
          EXPECT_EQ(inList, visible > 0)
              << "block (" << qb << ", " << kb << ")";
          EXPECT_EQ(p.anyVisible(q0, q1, k0, k1), visible > 0);
          // allVisible decides whether the kernel masks inside the block.
          EXPECT_EQ(p.allVisible(q0, q1, k0, k1), visible == total);
        }
      }
      // visitors() is the transpose of the list.
      std::vector<std::vector<int64_t>> vis = l.visitors(b, h);
      int64_t entries = 0;
      for (int64_t kb = 0; kb < l.kBlocks; ++kb) {
        entries += static_cast<int64_t>(vis[kb].size());
        for (int64_t qb : vis[kb])
          EXPECT_TRUE(std::count(rows.cols.begin() + rows.rowStart[qb],
                                 rows.cols.begin() + rows.rowStart[qb + 1],
                                 kb) == 1);
      }
      EXPECT_EQ(entries, static_cast<int64_t>(rows.cols.size()));
    }
}

const Sizes kSizes[] = {{1, 1, 64, 64},     {64, 64, 64, 64},  {65, 65, 64, 64},
                        {200, 200, 64, 64}, {1, 300, 64, 64},  {7, 300, 16, 32},
                        {300, 7, 32, 16},   {130, 257, 8, 64}, {100, 100, 1, 1},
                        {33, 97, 5, 3}};

TEST(AttentionPattern, DenseListsEveryBlockAndNeverMasks) {
  for (const Sizes &s : kSizes) {
    checkLists(Pattern::dense(), s);
    BlockLists l =
        makeBlockLists(Pattern::dense(), s.Tq, s.Tk, s.blockQ, s.blockK);
    EXPECT_EQ(l.lists[0].cols.size(),
              static_cast<size_t>(l.qBlocks * l.kBlocks));
  }
}

TEST(AttentionPattern, CausalListsBlocksOnOrBelowTheDiagonal) {
  for (const Sizes &s : kSizes)
    checkLists(Pattern::causal(s.Tq, s.Tk), s);
  // 4 x 4 blocks, square: the lower triangle, 10 blocks.
  BlockLists l = makeBlockLists(Pattern::causal(256, 256), 256, 256, 64, 64);
  EXPECT_EQ(l.lists[0].cols.size(), 10u);
  EXPECT_EQ(l.lists[0].rowStart, (std::vector<int64_t>{0, 1, 3, 6, 10}));
}

TEST(AttentionPattern, CausalAlignsTheLastQueryWithTheLastKey) {
  // Decoding one token after 99 cached ones sees all 100 keys.
  Pattern p = Pattern::causal(1, 100);
  EXPECT_TRUE(p.visible(0, 99));
  EXPECT_TRUE(p.visible(0, 0));
  Pattern square = Pattern::causal(10, 10);
  EXPECT_TRUE(square.visible(3, 3));
  EXPECT_FALSE(square.visible(3, 4));
}

} // namespace
