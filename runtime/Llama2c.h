//===- Llama2c.h - llama2.c checkpoints -------------------------*- C++ -*-===//
#ifndef KILN_RUNTIME_LLAMA2C_H
#define KILN_RUNTIME_LLAMA2C_H

#include "runtime/Safetensors.h"

#include <string>
#include <utility>
#include <vector>

namespace kiln::runtime {

/// The seven-int header of a llama2.c "version 0" checkpoint, with the
/// Hugging Face Llama names the values bind.
struct Llama2cConfig {
  int32_t dim, hiddenDim, layers, heads, kvHeads, vocab, seqLen;
  bool sharedClassifier;
  /// {"hidden_size", dim}, {"intermediate_size", hidden_dim}, ...
  std::vector<std::pair<std::string, int64_t>> hyperparameters() const;
};

/// Reads only the header (to bind hyperparameters before compiling).
Status readLlama2cConfig(const std::string &path, Llama2cConfig &config);

/// Reads the whole checkpoint into tensors named as in examples/llama.kiln
/// (model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight, ...;
/// a separate classifier becomes lm_head.weight). The file size must match
/// the header exactly.
Status readLlama2c(const std::string &path, Llama2cConfig &config,
                   NamedTensors &out);

} // namespace kiln::runtime

#endif
