//===- Pattern.cpp - which keys each query sees, and its block lists ------===//
#include "runtime/attention/Pattern.h"

#include <algorithm>

using namespace kiln::runtime::attention;

bool Pattern::anyVisible(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const {
  switch (kind) {
  case Kind::Dense:
    return true;
  case Kind::Causal: // the last query sees the most keys
    return k0 <= q1 - 1 + offset;
  }
  return true;
}

bool Pattern::allVisible(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const {
  switch (kind) {
  case Kind::Dense:
    return true;
  case Kind::Causal: // the first query sees the fewest
    return k1 - 1 <= q0 + offset;
  }
  return false;
}

std::vector<std::vector<int64_t>> BlockLists::visitors(int64_t b,
                                                       int64_t h) const {
  const BlockRows &rows = of(b, h);
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(kBlocks));
  for (int64_t qb = 0; qb < qBlocks; ++qb)
    for (int64_t e = rows.rowStart[qb]; e < rows.rowStart[qb + 1]; ++e)
      out[static_cast<size_t>(rows.cols[e])].push_back(qb);
  return out;
}

BlockLists kiln::runtime::attention::makeBlockLists(
    const Pattern &pattern, int64_t Tq, int64_t Tk, int64_t blockQ,
    int64_t blockK, int64_t batch, int64_t heads) {
  BlockLists l;
  l.blockQ = blockQ;
  l.blockK = blockK;
  l.qBlocks = (Tq + blockQ - 1) / blockQ;
  l.kBlocks = (Tk + blockK - 1) / blockK;
  l.heads = heads;
  size_t count = pattern.uniform() ? 1 : static_cast<size_t>(batch * heads);
  l.lists.resize(count);
  for (BlockRows &rows : l.lists) {
    rows.rowStart.push_back(0);
    for (int64_t qb = 0; qb < l.qBlocks; ++qb) {
      int64_t q0 = qb * blockQ, q1 = std::min(Tq, q0 + blockQ);
      for (int64_t kb = 0; kb < l.kBlocks; ++kb) {
        int64_t k0 = kb * blockK, k1 = std::min(Tk, k0 + blockK);
        if (pattern.anyVisible(q0, q1, k0, k1))
          rows.cols.push_back(kb);
      }
      rows.rowStart.push_back(static_cast<int64_t>(rows.cols.size()));
    }
  }
  return l;
}
