//===- AttentionPatternTest.cpp - attention patterns and block lists ------===//
//
// runtime/attention/Pattern.h against brute force. The predicate is checked
// against the formulas of the sparse-attention issue, written out again here
// pair by pair; the rectangle tests (anyVisible, allVisible) and the block
// lists against that predicate over every pair of every block: for every
// pattern kind, causal or not, with global tokens, random blocks per head,
// sizes that are and are not multiples of the block size, square and
// non-square blocks, Tq < Tk (decoding) and Tq > Tk.
//
//===----------------------------------------------------------------------===//
#include "runtime/attention/Pattern.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

using namespace kiln::runtime::attention;

namespace {

struct Sizes {
  int64_t Tq, Tk, blockQ, blockK;
};

PatternSpec spec(PatternKind kind, bool causal, int64_t globalTokens = 0) {
  PatternSpec s;
  s.kind = kind;
  s.causal = causal;
  s.globalTokens = globalTokens;
  return s;
}

PatternSpec window(int64_t w, bool causal, int64_t g = 0) {
  PatternSpec s = spec(PatternKind::SlidingWindow, causal, g);
  s.window = w;
  return s;
}

PatternSpec bigBird(int64_t b, int64_t l, int64_t G, int64_t r, bool causal,
                    int64_t g = 0) {
  PatternSpec s = spec(PatternKind::BlockSparse, causal, g);
  s.block = b;
  s.local = l;
  s.globalBlocks = G;
  s.random = r;
  s.seed = 11;
  return s;
}

PatternSpec strided(int64_t st, bool causal, int64_t g = 0) {
  PatternSpec s = spec(PatternKind::Strided, causal, g);
  s.stride = st;
  return s;
}

PatternSpec fixed(int64_t st, int64_t c, bool causal, int64_t g = 0) {
  PatternSpec s = spec(PatternKind::Fixed, causal, g);
  s.stride = st;
  s.summary = c;
  return s;
}

/// The definition, pair by pair (p is the query's position).
bool expected(const PatternSpec &s, int64_t Tq, int64_t Tk, int64_t h,
              int64_t i, int64_t j) {
  int64_t p = s.causal ? i + Tk - Tq : i;
  if (s.causal && j > p)
    return false;
  if (j < s.globalTokens || p < s.globalTokens)
    return true;
  auto floorDiv = [](int64_t a, int64_t b) {
    return a >= 0 ? a / b : -((-a + b - 1) / b);
  };
  switch (s.kind) {
  case PatternKind::Dense:
    return true;
  case PatternKind::SlidingWindow:
    return s.causal ? p - s.window < j : std::abs(p - j) < s.window;
  case PatternKind::BlockSparse: {
    int64_t I = p / s.block, J = j / s.block;
    if (std::abs(I - J) <= s.local || J < s.globalBlocks || I < s.globalBlocks)
      return true;
    std::vector<int64_t> r =
        randomKeyBlocks(s, h, I, (Tk + s.block - 1) / s.block);
    return std::count(r.begin(), r.end(), J) == 1;
  }
  case PatternKind::Strided: {
    int64_t d = p - j;
    return d < s.stride || d - floorDiv(d, s.stride) * s.stride == 0;
  }
  case PatternKind::Fixed:
    return j / s.stride == p / s.stride || j % s.stride >= s.stride - s.summary;
  }
  return false;
}

void checkAgainstBruteForce(const PatternSpec &ps, const Sizes &s,
                            int64_t heads) {
  SCOPED_TRACE(::testing::Message()
               << formatPattern(ps) << (ps.causal ? " causal" : "")
               << " Tq=" << s.Tq << " Tk=" << s.Tk << " blocks " << s.blockQ
               << "x" << s.blockK);
  Pattern p(ps, s.Tq, s.Tk, heads);
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < s.Tq; ++i)
      for (int64_t j = 0; j < s.Tk; ++j)
        ASSERT_EQ(p.visible(h, i, j), expected(ps, s.Tq, s.Tk, h, i, j))
            << "head " << h << " query " << i << " key " << j;
  BlockLists l = makeBlockLists(p, s.blockQ, s.blockK);
  ASSERT_EQ(l.qBlocks, (s.Tq + s.blockQ - 1) / s.blockQ);
  ASSERT_EQ(l.kBlocks, (s.Tk + s.blockK - 1) / s.blockK);
  ASSERT_EQ(l.lists.size(), p.uniform() ? 1u : static_cast<size_t>(heads));
  BlockLists t = l.transposed();
  int64_t computed = 0;
  for (int64_t h = 0; h < heads; ++h) {
    const BlockRows &rows = l.of(h);
    ASSERT_EQ(rows.rowStart.size(), static_cast<size_t>(l.qBlocks + 1));
    for (int64_t qb = 0; qb < l.qBlocks; ++qb) {
      int64_t q0 = qb * s.blockQ, q1 = std::min(s.Tq, q0 + s.blockQ);
      std::vector<int32_t> listed(rows.cols.begin() + rows.rowStart[qb],
                                  rows.cols.begin() + rows.rowStart[qb + 1]);
      ASSERT_TRUE(std::is_sorted(listed.begin(), listed.end()));
      computed += static_cast<int64_t>(listed.size());
      for (int64_t kb = 0; kb < l.kBlocks; ++kb) {
        int64_t k0 = kb * s.blockK, k1 = std::min(s.Tk, k0 + s.blockK);
        int64_t visible = 0, total = 0;
        for (int64_t i = q0; i < q1; ++i)
          for (int64_t j = k0; j < k1; ++j, ++total)
            visible += p.visible(h, i, j);
        bool inList = std::count(listed.begin(), listed.end(), kb) == 1;
        // Listed exactly when some pair is visible: no visible pair is
        // skipped, no empty block computed.
        ASSERT_EQ(inList, visible > 0)
            << "head " << h << " block (" << qb << ", " << kb << ")";
        ASSERT_EQ(p.anyVisible(h, q0, q1, k0, k1), visible > 0);
        // allVisible decides whether the kernel masks inside the block: it
        // may only err on the safe side, and only where global tokens mix
        // with the pattern.
        bool all = p.allVisible(h, q0, q1, k0, k1);
        ASSERT_TRUE(!all || visible == total) << "block " << qb << "," << kb;
        if (ps.globalTokens == 0) {
          ASSERT_EQ(all, visible == total) << "block " << qb << "," << kb;
        }
        // rowIntervals, where it answers, lists exactly the visible keys.
        for (int64_t i = q0; i < q1; ++i) {
          std::pair<int64_t, int64_t> spans[8];
          int n = p.rowIntervals(h, i, k0, k1, spans, 8);
          if (n < 0) {
            ASSERT_TRUE(ps.kind == PatternKind::Strided ||
                        ps.kind == PatternKind::Fixed ||
                        ps.kind == PatternKind::BlockSparse);
            continue;
          }
          std::vector<bool> listed(static_cast<size_t>(k1 - k0), false);
          for (int e = 0; e < n; ++e) {
            ASSERT_LT(spans[e].first, spans[e].second);
            ASSERT_TRUE(e == 0 || spans[e - 1].second < spans[e].first);
            for (int64_t j = spans[e].first; j < spans[e].second; ++j)
              listed[static_cast<size_t>(j - k0)] = true;
          }
          for (int64_t j = k0; j < k1; ++j)
            ASSERT_EQ(listed[static_cast<size_t>(j - k0)], p.visible(h, i, j))
                << "row " << i << " key " << j;
        }
      }
    }
    // transposed() lists, for each key block, the query blocks visiting it.
    const BlockRows &byKey = t.of(h);
    ASSERT_EQ(byKey.count(), rows.count());
    for (int64_t kb = 0; kb < l.kBlocks; ++kb)
      for (int64_t e = byKey.rowStart[kb]; e < byKey.rowStart[kb + 1]; ++e) {
        int64_t qb = byKey.cols[e];
        ASSERT_EQ(std::count(rows.cols.begin() + rows.rowStart[qb],
                             rows.cols.begin() + rows.rowStart[qb + 1], kb),
                  1);
      }
  }
  EXPECT_EQ(l.computed(), computed);
}

const Sizes kSizes[] = {
    {1, 1, 64, 64},   {63, 63, 64, 64}, {65, 65, 64, 64},   {200, 200, 64, 64},
    {1, 300, 64, 64}, {7, 300, 16, 32}, {300, 7, 32, 16},   {130, 257, 8, 64},
    {100, 100, 1, 1}, {33, 97, 5, 3},   {517, 517, 64, 64}, {150, 190, 16, 16}};

std::vector<PatternSpec> allPatterns() {
  std::vector<PatternSpec> out;
  for (bool causal : {false, true}) {
    out.push_back(spec(PatternKind::Dense, causal));
    out.push_back(spec(PatternKind::Dense, causal, 5));
    out.push_back(window(1, causal));
    out.push_back(window(40, causal));
    out.push_back(window(70, causal, 3));
    out.push_back(bigBird(8, 0, 0, 0, causal));
    out.push_back(bigBird(16, 1, 1, 3, causal));
    out.push_back(bigBird(32, 2, 0, 2, causal, 7));
    out.push_back(bigBird(64, 1, 1, 3, causal));
    out.push_back(strided(1, causal));
    out.push_back(strided(7, causal));
    out.push_back(strided(64, causal, 2));
    out.push_back(fixed(8, 2, causal));
    out.push_back(fixed(50, 50, causal));
    out.push_back(fixed(64, 8, causal, 4));
  }
  return out;
}

TEST(AttentionPattern, EveryPatternMatchesBruteForce) {
  for (const PatternSpec &ps : allPatterns()) {
    ASSERT_EQ(kiln::runtime::attention::checkPattern(ps), "")
        << formatPattern(ps);
    for (const Sizes &s : kSizes) {
      checkAgainstBruteForce(ps, s, 3);
      if (::testing::Test::HasFatalFailure())
        return;
    }
  }
}

TEST(AttentionPattern, DenseListsEveryBlockAndCausalTheLowerTriangle) {
  BlockLists d = makeBlockLists(Pattern::dense(256, 200), 64, 64);
  EXPECT_EQ(d.lists[0].count(), 4 * 4);
  // 4 x 4 blocks, square: the lower triangle, 10 blocks.
  BlockLists l = makeBlockLists(Pattern::causal(256, 256), 64, 64);
  EXPECT_EQ(l.lists[0].count(), 10);
  EXPECT_EQ(l.lists[0].rowStart, (std::vector<int64_t>{0, 1, 3, 6, 10}));
}

TEST(AttentionPattern, CausalAlignsTheLastQueryWithTheLastKey) {
  // Decoding one token after 99 cached ones sees all 100 keys.
  Pattern p = Pattern::causal(1, 100);
  EXPECT_TRUE(p.visible(0, 0, 99));
  EXPECT_TRUE(p.visible(0, 0, 0));
  Pattern square = Pattern::causal(10, 10);
  EXPECT_TRUE(square.visible(0, 3, 3));
  EXPECT_FALSE(square.visible(0, 3, 4));
  // A sliding window decoding at position 99 sees keys 96..99.
  Pattern w(window(4, true), 1, 100, 1);
  for (int64_t j = 0; j < 100; ++j)
    EXPECT_EQ(w.visible(0, 0, j), j >= 96) << j;
}

TEST(AttentionPattern, SlidingWindowComputesABand) {
  // T = 4096, window 512, blocks of 64: each query block sees at most
  // 512 / 64 + 1 key blocks.
  Pattern p(window(512, true), 4096, 4096, 12);
  BlockLists l = makeBlockLists(p, 64, 64);
  ASSERT_EQ(l.lists.size(), 1u);
  for (int64_t qb = 0; qb < l.qBlocks; ++qb)
    EXPECT_EQ(l.lists[0].rowStart[qb + 1] - l.lists[0].rowStart[qb],
              std::min<int64_t>(qb + 1, 9));
}

TEST(AttentionPattern, RandomBlocksAreReproducibleDistinctAndPerHead) {
  PatternSpec s = bigBird(64, 1, 1, 3, false);
  std::set<std::vector<int64_t>> perHead;
  for (int64_t h = 0; h < 12; ++h) {
    std::vector<int64_t> r = randomKeyBlocks(s, h, 20, 64);
    EXPECT_EQ(r, randomKeyBlocks(s, h, 20, 64));
    ASSERT_EQ(r.size(), 3u);
    for (int64_t J : r) {
      EXPECT_GE(J, 1) << "a global block is not drawn";
      EXPECT_TRUE(J < 19 || J > 21) << "a local block is not drawn";
    }
    EXPECT_EQ(std::set<int64_t>(r.begin(), r.end()).size(), 3u);
    perHead.insert(r);
  }
  EXPECT_GT(perHead.size(), 6u) << "heads draw different blocks";
  PatternSpec other = s;
  other.seed = 12;
  EXPECT_NE(randomKeyBlocks(other, 0, 20, 64), randomKeyBlocks(s, 0, 20, 64));
  // Causal: only blocks at or before the query block; with too few
  // candidates, all of them.
  s.causal = true;
  EXPECT_EQ(randomKeyBlocks(s, 0, 4, 64), (std::vector<int64_t>{1, 2}));
  for (int64_t J : randomKeyBlocks(s, 5, 40, 64))
    EXPECT_LE(J, 38);
}

TEST(AttentionPattern, SpecsAreCheckedNamingTheParameter) {
  PatternSpec s = window(0, true);
  EXPECT_EQ(kiln::runtime::attention::checkPattern(s),
            "sliding_window: 'window' must be positive, got 0");
  s = bigBird(48, 1, 1, 0, false);
  EXPECT_EQ(kiln::runtime::attention::checkPattern(s),
            "block_sparse: 'block' must be a power of two, got 48");
  s = bigBird(64, 1, 1, 3, false);
  std::vector<std::string> given = {"block", "local", "global", "random"};
  EXPECT_EQ(kiln::runtime::attention::checkPattern(s, &given),
            "block_sparse: 'random' blocks need a 'seed' (random = 3)");
  s = fixed(8, 9, false);
  EXPECT_EQ(kiln::runtime::attention::checkPattern(s),
            "fixed: 'summary' (9) must not exceed 'stride' (8)");
  s = strided(4, false);
  s.window = 3;
  EXPECT_EQ(kiln::runtime::attention::checkPattern(s),
            "strided: sets a parameter this kind does not have");
  s = window(4, false);
  s.globalTokens = -1;
  EXPECT_EQ(kiln::runtime::attention::checkPattern(s),
            "sliding_window: 'global_tokens' must be zero or more, got -1");
  EXPECT_EQ(formatPattern(bigBird(64, 1, 1, 3, false)),
            "block_sparse(block = 64, local = 1, global = 1, random = 3, "
            "seed = 11)");
}

} // namespace
