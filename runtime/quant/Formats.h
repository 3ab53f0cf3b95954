//===- Formats.h - quantized weight storage: int8, int4, NF4 ----*- C++ -*-===//
//
// How kiln stores a quantized weight, and the quantizers and dequantizers
// that define each format (the reference every quantized kernel is checked
// against):
//
//   int8  symmetric, one f32 scale per output channel (row of a [N, K]
//         weight): scale = max|w| / 127, q = round(w / scale) in [-127, 127]
//         (ties to even), w' = q * scale.
//   int4  asymmetric (PyTorch's affine convention), groups of G along the
//         input dimension: the range [min(lo, 0), max(hi, 0)] of each group
//         is split into 15 steps, scale = range / 15 (1 for an all-zero
//         group), zero point = clamp(round(-lo / scale), 0, 15) kept as an
//         f32, q = clamp(round(w / scale) + zero, 0, 15), w' = (q - zero) *
//         scale; two codes per byte, the first in the high nibble.
//   nf4   bitsandbytes' 4-bit NormalFloat, bit for bit: the flattened
//         tensor in blocks of B (64) values, each multiplied by the f32
//         reciprocal of its absmax and mapped to one of the 16 NF4 levels by
//         bitsandbytes' decision thresholds; two codes per byte, the first in
//         the high nibble (an odd count pads with the code of 0.0). With
//         double quantization the absmax values have their mean subtracted
//         and are quantized in blocks of 256 with bitsandbytes' signed
//         dynamic 8-bit map, searched as its CUDA kernel searches it,
//         keeping an f32 absmax per block of 256 and the mean.
//
// The one choice bitsandbytes leaves to the hardware: the mean of the
// absmax values is the correctly rounded f32 mean (summed in f64), where
// its GPU reduction may differ in the last bit.
//
// Every function checks its arguments and never trusts a count: a caller
// reading a file passes sizes it has bounded against the bytes it holds.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_QUANT_FORMATS_H
#define KILN_RUNTIME_QUANT_FORMATS_H

#include "runtime/Tensor.h"

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace kiln::runtime::quant {

// --- NF4 --------------------------------------------------------------------

/// The 16 NF4 levels (QLoRA, Dettmers et al. 2023), ascending: code c
/// decodes to kNf4Levels[c] * absmax.
extern const std::array<float, 16> kNf4Levels;

/// The NF4 code of x (already divided by its block's absmax): how many of
/// bitsandbytes' 15 decision thresholds x exceeds. NaN (an all-zero block)
/// gives 0, as bitsandbytes' comparisons do.
uint8_t nf4Code(float x);

/// bitsandbytes' signed dynamic 8-bit map (`create_dynamic_map()`): 256
/// ascending values in [-1, 1]. bitsandbytes builds it with torch on the
/// CPU, and torch's float32 linspace rounds differently per CPU kernel
/// (AVX2, AVX-512, none); this is the map torch's AVX2 kernels give, its
/// default on x86-64. Readers use whatever map a file stores.
const std::array<float, 256> &dynamicMap();

/// The index of `x` in an ascending 256-entry map as bitsandbytes' CUDA
/// quantizer finds it: a binary search from the middle entry, then the
/// nearer of the two neighbours by their f32 midpoint.
uint8_t dynamicCode(const std::array<float, 256> &map, float x);

/// Block sizes bitsandbytes accepts: powers of two from 64 to 4096.
bool validNf4BlockSize(int64_t b);

struct Nf4Options {
  int64_t blockSize = 64;
  bool doubleQuant = true;
  int64_t nestedBlockSize = 256;
};

/// An NF4 tensor in bitsandbytes' layout.
struct Nf4Tensor {
  int64_t numel = 0;
  int64_t blockSize = 64;
  bool nested = false;
  int64_t nestedBlockSize = 256;
  /// ceil(numel / 2) bytes: element 2i in the high nibble of byte i.
  std::vector<uint8_t> packed;
  /// Without double quantization: the f32 absmax of each block.
  std::vector<float> absmax;
  /// With it: each block's absmax minus `offset`, as a dynamic-map code...
  std::vector<uint8_t> qabsmax;
  /// ...scaled by the absmax of its group of nestedBlockSize codes.
  std::vector<float> nestedAbsmax;
  /// The 8-bit map the codes index (the dynamic map when kiln writes it).
  std::array<float, 256> nestedMap = dynamicMap();
  float offset = 0; // the mean of the absmax values

  int64_t blocks() const { return (numel + blockSize - 1) / blockSize; }
  /// Each block's absmax as f32 (decoded from the nested form if nested):
  /// code * nestedAbsmax + offset, as bitsandbytes dequantizes it.
  std::vector<float> blockScales() const;
  /// Checks the sizes of every array against numel and the block sizes.
  Status check() const;
};

Status quantizeNf4(const float *w, int64_t n, const Nf4Options &options,
                   Nf4Tensor &out);
/// out[i] = level(code_i) * absmax(block of i), for all numel values.
Status dequantizeNf4(const Nf4Tensor &t, float *out);

/// bitsandbytes' `quant_state.bitsandbytes__nf4` JSON, as Python's
/// json.dumps writes it: quant_type, blocksize, dtype, shape and, when
/// nested, nested_blocksize, nested_dtype, nested_offset.
std::string nf4QuantStateJson(const Nf4Tensor &t,
                              const std::vector<int64_t> &shape);

/// A double as Python's repr() writes it (the shortest string that reads
/// back to the same double, "1e-05" / "0.0001" / "2.0").
std::string pythonFloatRepr(double v);

// --- int8 -------------------------------------------------------------------

struct Int8Tensor {
  int64_t rows = 0, cols = 0;
  std::vector<int8_t> q;     // rows x cols
  std::vector<float> scales; // one per row
  Status check() const;
};

Status quantizeInt8(const float *w, int64_t rows, int64_t cols,
                    Int8Tensor &out);
Status dequantizeInt8(const Int8Tensor &t, float *out);

/// Activations for the int8 matmul, one scale per row (token): for each of
/// `rows` rows of `cols` values, scale = absmax / L and code = x *
/// (L / absmax) in f32, rounded to nearest, ties to even, for L = `levels`
/// (127, or 63 where the integer GEMM needs 7 bits: QuantMatmul.cpp); a
/// row of zeros has scale 0 and codes 0. Vectorized; rows in parallel when
/// there are many.
void quantizeActivations(const float *x, int64_t rows, int64_t cols, int levels,
                         int8_t *codes, float *scales);

// --- int4 -------------------------------------------------------------------

struct Int4Tensor {
  int64_t rows = 0, cols = 0, group = 32;
  /// Each row in ceil(cols / 2) bytes, element 2i of a row in the high
  /// nibble of its byte i.
  std::vector<uint8_t> packed;
  /// rows x ceil(cols / group), row-major.
  std::vector<float> scales, zeros;
  int64_t groups() const { return (cols + group - 1) / group; }
  int64_t rowBytes() const { return (cols + 1) / 2; }
  Status check() const;
};

Status quantizeInt4(const float *w, int64_t rows, int64_t cols, int64_t group,
                    Int4Tensor &out);
Status dequantizeInt4(const Int4Tensor &t, float *out);

} // namespace kiln::runtime::quant

#endif
