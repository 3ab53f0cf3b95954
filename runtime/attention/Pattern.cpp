//===- Pattern.cpp - which keys each query sees, and its block lists ------===//
//
// Rectangles of (query, key) pairs are decided in closed form per kind —
// a sliding window's band, the differences p - j of a strided pattern, the
// pattern blocks a block-sparse rectangle overlaps — so that building the
// block lists costs about one test per listed block, not one per pair.
// test/runtime/PatternTest.cpp checks each against brute force.
//
//===----------------------------------------------------------------------===//
#include "runtime/attention/Pattern.h"

#include <algorithm>

using namespace kiln::runtime::attention;

Pattern::Pattern(const PatternSpec &spec, int64_t Tq, int64_t Tk, int64_t heads)
    : s(spec), Tq(Tq), Tk(Tk), heads(std::max<int64_t>(1, heads)) {
  offset = s.causal ? Tk - Tq : 0;
  if (s.kind != PatternKind::BlockSparse || s.random <= 0 || Tq <= 0 || Tk <= 0)
    return;
  int64_t b = s.block, last = Tq - 1 + offset;
  if (last < 0)
    return; // every query row precedes every key: nothing is visible
  firstRow = std::max<int64_t>(offset, 0) / b;
  rows = last / b - firstRow + 1;
  int64_t keyBlocks = (Tk + b - 1) / b;
  randomStart.reserve(static_cast<size_t>(this->heads * rows + 1));
  randomStart.push_back(0);
  for (int64_t h = 0; h < this->heads; ++h)
    for (int64_t I = firstRow; I < firstRow + rows; ++I) {
      std::vector<int64_t> r = randomKeyBlocks(s, h, I, keyBlocks);
      std::sort(r.begin(), r.end());
      randomBlocks.insert(randomBlocks.end(), r.begin(), r.end());
      randomStart.push_back(static_cast<int64_t>(randomBlocks.size()));
    }
}

bool Pattern::blockVisible(int64_t h, int64_t I, int64_t J) const {
  if ((J >= I - s.local && J <= I + s.local) || J < s.globalBlocks ||
      I < s.globalBlocks)
    return true;
  if (s.random <= 0 || I < firstRow || I >= firstRow + rows)
    return false;
  size_t row = static_cast<size_t>(h * rows + I - firstRow);
  auto first = randomBlocks.begin() + randomStart[row],
       last = randomBlocks.begin() + randomStart[row + 1];
  return std::binary_search(first, last, J);
}

bool Pattern::baseVisible(int64_t h, int64_t p, int64_t j) const {
  switch (s.kind) {
  case PatternKind::Dense:
    return true;
  case PatternKind::SlidingWindow:
    return s.causal ? j > p - s.window : p - j < s.window && j - p < s.window;
  case PatternKind::BlockSparse:
    return blockVisible(h, p / s.block, j / s.block);
  case PatternKind::Strided: {
    int64_t d = p - j;
    return d < s.stride || d % s.stride == 0;
  }
  case PatternKind::Fixed:
    return j / s.stride == p / s.stride || j % s.stride >= s.stride - s.summary;
  }
  return false;
}

bool Pattern::visible(int64_t h, int64_t i, int64_t j) const {
  int64_t p = i + offset;
  if (s.causal && j > p)
    return false;
  if (j < s.globalTokens || p < s.globalTokens)
    return true;
  return baseVisible(h, p, j);
}

// Rectangles below are in positions: queries p in [p0, p1), keys [k0, k1),
// both non-empty, p0 >= 0, and under causal k0 <= p1 - 1 (some pair is on
// the visible side of the diagonal).

bool Pattern::baseAny(int64_t h, int64_t p0, int64_t p1, int64_t k0,
                      int64_t k1) const {
  switch (s.kind) {
  case PatternKind::Dense:
    return true;
  case PatternKind::SlidingWindow: // the union of the rows' windows
    return k1 - 1 > p0 - s.window && (s.causal || k0 < p1 - 1 + s.window);
  case PatternKind::BlockSparse: {
    int64_t b = s.block;
    for (int64_t I = p0 / b; I <= (p1 - 1) / b; ++I)
      for (int64_t J = k0 / b; J <= (k1 - 1) / b; ++J)
        if (blockVisible(h, I, J) &&
            (!s.causal || std::max(k0, J * b) <= std::min(p1, (I + 1) * b) - 1))
          return true;
    return false;
  }
  case PatternKind::Strided: { // every difference in [dmin, dmax] occurs
    int64_t dmin = p0 - (k1 - 1), dmax = p1 - 1 - k0;
    if (s.causal)
      dmin = std::max<int64_t>(dmin, 0);
    if (dmin > dmax)
      return false;
    if (dmin < s.stride)
      return true;
    return (dmin + s.stride - 1) / s.stride * s.stride <= dmax;
  }
  case PatternKind::Fixed: {
    int64_t st = s.stride;
    // The same segment: segments both ranges reach.
    for (int64_t B = std::max(p0, k0) / st; B <= (std::min(p1, k1) - 1) / st;
         ++B) {
      int64_t pmin = std::max(p0, B * st),
              pmax = std::min(p1, (B + 1) * st) - 1;
      int64_t jmin = std::max(k0, B * st),
              jmax = std::min(k1, (B + 1) * st) - 1;
      if (pmin <= pmax && jmin <= jmax && (!s.causal || jmin <= pmax))
        return true;
    }
    // A summary column: the first one at or after k0.
    int64_t r = k0 % st,
            j = r >= st - s.summary ? k0 : k0 + (st - s.summary - r);
    return j < k1 && (!s.causal || j <= p1 - 1);
  }
  }
  return true;
}

bool Pattern::baseAll(int64_t h, int64_t p0, int64_t p1, int64_t k0,
                      int64_t k1) const {
  switch (s.kind) {
  case PatternKind::Dense:
    return true;
  case PatternKind::SlidingWindow: // the narrowest windows: first and last row
    return k0 > p1 - 1 - s.window && (s.causal || k1 - 1 < p0 + s.window);
  case PatternKind::BlockSparse: {
    int64_t b = s.block;
    for (int64_t I = p0 / b; I <= (p1 - 1) / b; ++I)
      for (int64_t J = k0 / b; J <= (k1 - 1) / b; ++J)
        if (!blockVisible(h, I, J))
          return false;
    return true;
  }
  case PatternKind::Strided: {
    int64_t dmin = p0 - (k1 - 1), dmax = p1 - 1 - k0;
    int64_t lo = std::max(dmin, s.stride);
    return s.stride == 1 || lo > dmax || (lo == dmax && dmax % s.stride == 0);
  }
  case PatternKind::Fixed: {
    int64_t st = s.stride;
    bool oneSegment = p0 / st == (p1 - 1) / st;
    for (int64_t j = k0; j < k1; ++j)
      if (j % st < st - s.summary && !(oneSegment && j / st == p0 / st))
        return false;
    return true;
  }
  }
  return false;
}

bool Pattern::anyVisible(int64_t h, int64_t q0, int64_t q1, int64_t k0,
                         int64_t k1) const {
  int64_t p0 = q0 + offset, p1 = q1 + offset, g = s.globalTokens;
  if (s.causal) {
    p0 = std::max<int64_t>(p0, 0); // rows before the first key see nothing
    if (p0 >= p1 || k0 > p1 - 1)
      return false;
  }
  if (k0 < g) // a global key, seen by the last query
    return true;
  if (p0 < g && (!s.causal || k0 <= std::min(p1, g) - 1))
    return true; // a global query sees everything up to itself
  return baseAny(h, p0, p1, k0, k1);
}

bool Pattern::allVisible(int64_t h, int64_t q0, int64_t q1, int64_t k0,
                         int64_t k1) const {
  int64_t p0 = q0 + offset, p1 = q1 + offset;
  if (s.causal && (p0 < 0 || k1 - 1 > p0))
    return false;
  if (k1 <= s.globalTokens || p1 <= s.globalTokens)
    return true;
  return baseAll(h, p0, p1, k0, k1);
}

int Pattern::rowIntervals(int64_t h, int64_t i, int64_t k0, int64_t k1,
                          std::pair<int64_t, int64_t> *out, int max) const {
  int64_t p = i + offset, hi = s.causal ? std::min(k1, p + 1) : k1;
  int n = 0;
  // Appends [a, b) clipped to [k0, hi), merging with the previous one.
  auto add = [&](int64_t a, int64_t b) {
    a = std::max(a, k0);
    b = std::min(b, hi);
    if (a >= b)
      return true;
    if (n > 0 && a <= out[n - 1].second) {
      out[n - 1].second = std::max(out[n - 1].second, b);
      return true;
    }
    if (n == max)
      return false;
    out[n++] = {a, b};
    return true;
  };
  if (hi <= k0)
    return 0;
  if (p < s.globalTokens)
    return add(k0, hi) ? n : -1;
  // Global keys come first: every other interval starts after them or
  // overlaps them.
  if (!add(0, s.globalTokens))
    return -1;
  switch (s.kind) {
  case PatternKind::Dense:
    return add(k0, hi) ? n : -1;
  case PatternKind::SlidingWindow:
    return add(p - s.window + 1, s.causal ? hi : p + s.window) ? n : -1;
  case PatternKind::BlockSparse: {
    int64_t b = s.block, I = p / b;
    for (int64_t J = k0 / b; J * b < hi; ++J)
      if (blockVisible(h, I, J) && !add(J * b, (J + 1) * b))
        return -1;
    return n;
  }
  case PatternKind::Strided:
  case PatternKind::Fixed:
    return -1;
  }
  return -1;
}

std::vector<std::pair<int64_t, int64_t>>
Pattern::candidates(int64_t h, int64_t q0, int64_t q1) const {
  std::vector<std::pair<int64_t, int64_t>> r;
  int64_t p0 = q0 + offset, p1 = q1 + offset, hiKey = Tk;
  if (s.causal) {
    p0 = std::max<int64_t>(p0, 0);
    if (p0 >= p1)
      return r;
    hiKey = std::min(Tk, p1);
  }
  auto add = [&](int64_t a, int64_t b) {
    a = std::max<int64_t>(a, 0);
    b = std::min(b, hiKey);
    if (a < b)
      r.push_back({a, b});
  };
  if (p0 < s.globalTokens) {
    add(0, hiKey);
    return r;
  }
  add(0, s.globalTokens);
  switch (s.kind) {
  case PatternKind::Dense:
  case PatternKind::Strided: // the strided keys reach back to the start
  case PatternKind::Fixed:   // so do the summary keys
    add(0, hiKey);
    break;
  case PatternKind::SlidingWindow:
    add(p0 - s.window + 1, s.causal ? p1 : p1 - 1 + s.window);
    break;
  case PatternKind::BlockSparse: {
    int64_t b = s.block, I0 = p0 / b, I1 = (p1 - 1) / b;
    if (I0 < s.globalBlocks) {
      add(0, hiKey);
      break;
    }
    add(0, s.globalBlocks * b);
    add((I0 - s.local) * b, (I1 + s.local + 1) * b);
    if (s.random > 0)
      for (int64_t I = std::max(I0, firstRow); I <= I1 && I < firstRow + rows;
           ++I) {
        size_t row = static_cast<size_t>(h * rows + I - firstRow);
        for (int64_t e = randomStart[row]; e < randomStart[row + 1]; ++e)
          add(randomBlocks[e] * b, (randomBlocks[e] + 1) * b);
      }
    break;
  }
  }
  std::sort(r.begin(), r.end());
  std::vector<std::pair<int64_t, int64_t>> merged;
  for (auto [a, b] : r)
    if (!merged.empty() && a <= merged.back().second)
      merged.back().second = std::max(merged.back().second, b);
    else
      merged.push_back({a, b});
  return merged;
}

BlockLists kiln::runtime::attention::makeBlockLists(const Pattern &pattern,
                                                    int64_t blockQ,
                                                    int64_t blockK) {
  BlockLists l;
  int64_t Tq = pattern.queries(), Tk = pattern.keys();
  l.blockQ = blockQ;
  l.blockK = blockK;
  l.qBlocks = (Tq + blockQ - 1) / blockQ;
  l.kBlocks = (Tk + blockK - 1) / blockK;
  l.heads = pattern.numHeads();
  l.lists.resize(pattern.uniform() ? 1 : static_cast<size_t>(l.heads));
  for (size_t h = 0; h < l.lists.size(); ++h) {
    BlockRows &rows = l.lists[h];
    rows.rowStart.reserve(static_cast<size_t>(l.qBlocks + 1));
    rows.rowStart.push_back(0);
    for (int64_t qb = 0; qb < l.qBlocks; ++qb) {
      int64_t q0 = qb * blockQ, q1 = std::min(Tq, q0 + blockQ), last = -1;
      for (auto [a, b] : pattern.candidates(static_cast<int64_t>(h), q0, q1))
        for (int64_t kb = std::max(a / blockK, last + 1);
             kb <= (b - 1) / blockK; ++kb) {
          int64_t k0 = kb * blockK, k1 = std::min(Tk, k0 + blockK);
          last = kb;
          if (pattern.anyVisible(static_cast<int64_t>(h), q0, q1, k0, k1))
            rows.cols.push_back(static_cast<int32_t>(kb));
        }
      rows.rowStart.push_back(rows.count());
    }
  }
  return l;
}

BlockLists BlockLists::transposed() const {
  BlockLists t;
  t.blockQ = blockK;
  t.blockK = blockQ;
  t.qBlocks = kBlocks;
  t.kBlocks = qBlocks;
  t.heads = heads;
  for (const BlockRows &rows : lists) {
    BlockRows out;
    out.rowStart.assign(static_cast<size_t>(kBlocks + 1), 0);
    for (int32_t kb : rows.cols)
      ++out.rowStart[static_cast<size_t>(kb) + 1];
    for (int64_t kb = 0; kb < kBlocks; ++kb)
      out.rowStart[kb + 1] += out.rowStart[kb];
    out.cols.resize(rows.cols.size());
    std::vector<int64_t> next(out.rowStart.begin(), out.rowStart.end() - 1);
    for (int64_t qb = 0; qb < qBlocks; ++qb)
      for (int64_t e = rows.rowStart[qb]; e < rows.rowStart[qb + 1]; ++e)
        out.cols[static_cast<size_t>(next[rows.cols[e]]++)] =
            static_cast<int32_t>(qb);
    t.lists.push_back(std::move(out));
  }
  return t;
}

int64_t BlockLists::computed() const {
  int64_t n = 0;
  for (const BlockRows &rows : lists)
    n += rows.count();
  return lists.size() == 1 ? n * heads : n;
}
