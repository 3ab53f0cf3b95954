//===- Layout.cpp - the blocks an attention kernel computes ---------------===//
#include "runtime/attention/Layout.h"
#include "runtime/attention/Pattern.h"

#include <algorithm>

using namespace kiln::runtime::attention;

Layout kiln::runtime::attention::describeLayout(const PatternSpec &spec,
                                                int64_t Tq, int64_t Tk,
                                                int64_t heads,
                                                int64_t maxSide) {
  Pattern pattern(spec, Tq, Tk, heads);
  BlockLists lists = makeBlockLists(pattern, kKernelBlockQ, kKernelBlockK);
  Layout out;
  out.Tq = Tq;
  out.Tk = Tk;
  out.blockQ = lists.blockQ;
  out.blockK = lists.blockK;
  out.qBlocks = lists.qBlocks;
  out.kBlocks = lists.kBlocks;
  maxSide = std::max<int64_t>(1, maxSide);
  // Blocks per character, down and across.
  int64_t stepQ = (lists.qBlocks + maxSide - 1) / maxSide,
          stepK = (lists.kBlocks + maxSide - 1) / maxSide;
  stepQ = std::max<int64_t>(stepQ, 1);
  stepK = std::max<int64_t>(stepK, 1);
  int64_t rows = (lists.qBlocks + stepQ - 1) / stepQ,
          cols = (lists.kBlocks + stepK - 1) / stepK;
  for (size_t h = 0; h < lists.lists.size(); ++h) {
    const BlockRows &list = lists.lists[h];
    HeadLayout head;
    // Per cell: blocks in it, computed, computed whole.
    std::vector<int64_t> cells(static_cast<size_t>(rows * cols * 2), 0);
    for (int64_t qb = 0; qb < lists.qBlocks; ++qb) {
      int64_t q0 = qb * lists.blockQ, q1 = std::min(Tq, q0 + lists.blockQ);
      for (int64_t e = list.rowStart[qb]; e < list.rowStart[qb + 1]; ++e) {
        int64_t kb = list.cols[e];
        int64_t k0 = kb * lists.blockK, k1 = std::min(Tk, k0 + lists.blockK);
        bool whole =
            pattern.allVisible(static_cast<int64_t>(h), q0, q1, k0, k1);
        ++head.computed;
        head.masked += !whole;
        size_t cell = static_cast<size_t>((qb / stepQ) * cols + kb / stepK);
        ++cells[2 * cell];
        cells[2 * cell + 1] += whole;
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        int64_t inCell =
            (std::min(lists.qBlocks, (r + 1) * stepQ) - r * stepQ) *
            (std::min(lists.kBlocks, (c + 1) * stepK) - c * stepK);
        size_t cell = static_cast<size_t>(r * cols + c);
        int64_t computed = cells[2 * cell], whole = cells[2 * cell + 1];
        head.text += computed == 0 ? '.' : whole == inCell ? '#' : '+';
      }
      head.text += '\n';
    }
    out.heads.push_back(std::move(head));
  }
  return out;
}
