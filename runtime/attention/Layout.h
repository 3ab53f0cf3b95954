//===- Layout.h - the blocks an attention kernel computes -------*- C++ -*-===//
//
// What `kiln inspect --attention-layout=T` and `Model.attention_layout(T)`
// show: for one attention op at sequence length T, the block lists the
// kernels will iterate (Pattern.h, blocks of kBlockQ x kBlockK) per head,
// with their density and a text picture:
//
//   #  a block computed whole
//   +  a block computed with a mask inside (a window edge, the diagonal)
//   .  a block skipped
//
// Large grids are drawn downsampled: a character then stands for several
// blocks, '#' if all are computed whole, '.' if none is computed.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_ATTENTION_LAYOUT_H
#define KILN_RUNTIME_ATTENTION_LAYOUT_H

#include "runtime/attention/PatternSpec.h"

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::runtime::attention {

/// The blocked kernels' block size (attention/Flash.cpp).
constexpr int64_t kKernelBlockQ = 64, kKernelBlockK = 64;

struct HeadLayout {
  int64_t computed = 0; // blocks computed (listed)
  int64_t masked = 0;   // of those, blocks masked inside
  std::string text;     // rows of '#', '+' and '.', one per line
};

struct Layout {
  int64_t Tq = 0, Tk = 0, blockQ = 0, blockK = 0, qBlocks = 0, kBlocks = 0;
  /// One entry when every head has the same layout, else one per head.
  std::vector<HeadLayout> heads;
  /// The blocks of the full grid, qBlocks * kBlocks.
  int64_t total() const { return qBlocks * kBlocks; }
};

/// The layout of `spec` for Tq queries, Tk keys and `heads` heads, drawn at
/// most `maxSide` characters wide and tall.
Layout describeLayout(const PatternSpec &spec, int64_t Tq, int64_t Tk,
                      int64_t heads, int64_t maxSide = 64);

} // namespace kiln::runtime::attention

#endif
