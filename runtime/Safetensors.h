//===- Safetensors.h - the safetensors weight format ------------*- C++ -*-===//
#ifndef KILN_RUNTIME_SAFETENSORS_H
#define KILN_RUNTIME_SAFETENSORS_H

#include "runtime/Tensor.h"

#include <string>
#include <utility>
#include <vector>

namespace kiln::runtime {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

/// The largest JSON header accepted (the format recommends 100 MB).
constexpr uint64_t kMaxSafetensorsHeader = 100ull << 20;

/// The most tensors read from one file when the caller names no bound.
constexpr size_t kMaxSafetensorsTensors = 1 << 16;

/// Reads a .safetensors file, validating everything before trusting it: the
/// header size and JSON, each entry's dtype and shape against its byte range,
/// offsets inside the data section, no overlaps, gaps or repeated names.
/// Supported dtypes: F32, F16, BF16, F64, I32, I64, BOOL, U8, I8 (F16 and
/// BF16 stay 16-bit here; widenHalfTensors in HuggingFace.h makes them F32).
/// Errors name the file, the tensor and the field.
///
/// `maxTensors` bounds the work by what the caller can use (a model passes
/// its parameter count): the header is parsed entry by entry, without a
/// document tree, and refused as soon as it lists more tensors.
Status readSafetensors(const std::string &path, NamedTensors &out,
                       size_t maxTensors = kMaxSafetensorsTensors);

/// Writes tensors in the given order, through a temporary file and a rename.
Status writeSafetensors(const std::string &path, const NamedTensors &tensors);

} // namespace kiln::runtime

#endif
