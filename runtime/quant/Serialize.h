//===- Serialize.h - quantized weights as named tensors ---------*- C++ -*-===//
//
// A quantized weight in a checkpoint is a few tensors named after it. For a
// weight `X.weight`:
//
//   nf4   bitsandbytes' Linear4bit state dict, so Hugging Face checkpoints
//         read and write as they are: `X.weight` (U8 [ceil(n/2), 1], the
//         packed codes), `X.weight.absmax` (U8 codes when double-quantized,
//         else F32), `X.weight.quant_map` (F32 [16]), `X.weight.nested_absmax`
//         (F32), `X.weight.nested_quant_map` (F32 [256]) and
//         `X.weight.quant_state.bitsandbytes__nf4` (U8: the bytes of a JSON
//         object with quant_type, blocksize, dtype, shape and, nested,
//         nested_blocksize, nested_dtype, nested_offset).
//   int8  `X.weight` (I8 [N, K]) and `X.weight.scale` (F32 [N]).
//   int4  `X.weight` (U8 [N, ceil(K/2)]), `X.weight.scale` and
//         `X.weight.zero_point` (F32 [N, ceil(K/G)]) and
//         `X.weight.quant_state.kiln__int4` (U8: JSON with quant_type,
//         group_size and shape).
//
// Reading checks every tensor's dtype and shape against the quant state and
// the JSON field by field; an error names the tensor and the field.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_QUANT_SERIALIZE_H
#define KILN_RUNTIME_QUANT_SERIALIZE_H

#include "runtime/Safetensors.h"
#include "runtime/quant/Formats.h"
#include "runtime/quant/QuantSpec.h"

#include <map>

namespace kiln::runtime::quant {

/// The most tensors a checkpoint stores for one weight (bitsandbytes' NF4:
/// the codes and five more); readers bound a file's tensor count by it.
constexpr size_t kMaxTensorsPerWeight = 6;

/// One quantized weight in any format, with its logical (f32) shape.
struct QuantizedWeight {
  Format format = Format::NF4;
  std::vector<int64_t> shape;
  Nf4Tensor nf4;
  Int8Tensor int8;
  Int4Tensor int4;
  /// The bytes its storage takes (codes and scales).
  uint64_t storageBytes() const;
};

/// Quantizes an f32 tensor. int8 and int4 want a matrix ([N, K], rows are
/// output channels); nf4 takes any shape.
Status quantize(const Tensor &w, const QuantSpec &spec, QuantizedWeight &out);
/// The f32 tensor a quantized weight stands for.
Status dequantize(const QuantizedWeight &w, Tensor &out);

/// Appends the tensors that store `w` under the name `name`.
void appendTensors(const std::string &name, const QuantizedWeight &w,
                   NamedTensors &out);

/// Whether `tensors` hold a quantized weight called `name` (its quant
/// state, or for int8 an I8 tensor with a scale).
bool holdsQuantized(const std::string &name,
                    const std::map<std::string, const Tensor *> &tensors);

/// Reads the quantized weight `name` back; `used` receives the names of
/// the tensors it consumed.
Status readQuantized(const std::string &name,
                     const std::map<std::string, const Tensor *> &tensors,
                     QuantizedWeight &out, std::vector<std::string> *used);

} // namespace kiln::runtime::quant

#endif
