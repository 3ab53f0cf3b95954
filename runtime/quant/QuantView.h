//===- QuantView.h - a quantized parameter as kernels read it ---*- C++ -*-===//
//
// A loaded artifact's quantized parameter (runtime/quant/Formats.h), seen as
// the matrix it stands for: `rows` x `cols` f32 values held as codes in the
// artifact's weights section and scales beside them, never expanded whole.
// Kernels dequantize the rectangles they are about to use
// (`dequantizeRect`) into a buffer that stays in cache.
//
// The model builds one per quantized parameter when it loads, after
// checking every size against the storage table, and kernels receive it in
// View::quant.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_QUANT_QUANTVIEW_H
#define KILN_RUNTIME_QUANT_QUANTVIEW_H

#include "runtime/quant/QuantSpec.h"

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::runtime::quant {

struct QuantView {
  Format format = Format::NF4;
  /// The logical matrix: the parameter's first dimension by the rest.
  int64_t rows = 0, cols = 0;
  /// int4: the group along a row; nf4: the block of the flattened tensor.
  int64_t block = 0;
  /// int8: rows x cols codes; int4: rows x ceil(cols/2) bytes; nf4:
  /// ceil(rows*cols/2) bytes (first element in the high nibble).
  const uint8_t *codes = nullptr;
  /// int8: one per row; int4: rows x ceil(cols/group); nf4: one per block
  /// (decoded once at load from the double-quantized codes).
  const float *scales = nullptr;
  const float *zeros = nullptr; // int4
  /// NF4's decoded block scales, owned here (scales points into it).
  std::vector<float> decoded;
  /// NF4 as stored: the per-block absmax (f32, or 8-bit codes with their
  /// second-level scales, map and offset when double-quantized).
  const float *absmax = nullptr;
  const uint8_t *absmaxCodes = nullptr;
  const float *nestedAbsmax = nullptr, *nestedMap = nullptr;
  int64_t nestedBlock = 0;
  float offset = 0;
  /// "nf4:block=64,double=true" and the like, for messages and inspect.
  std::string spec;
};

struct QuantizedWeight;

/// The view's weight as the formats' own type (codes and scales copied):
/// what a checkpoint stores for it (runtime/quant/Serialize.h).
QuantizedWeight toQuantizedWeight(const QuantView &w,
                                  const std::vector<int64_t> &shape);

/// out[(r - r0) * ldo + (c - c0)] = the value at (r, c) for r in [r0, r1),
/// c in [c0, c1): exactly what runtime/quant/Formats.h's dequantizers give.
void dequantizeRect(const QuantView &w, int64_t r0, int64_t r1, int64_t c0,
                    int64_t c1, float *out, int64_t ldo);

} // namespace kiln::runtime::quant

#endif
