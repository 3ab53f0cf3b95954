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

/// Checks the header's seven values (`path` names the file in errors) and
/// gives the size in bytes of the checkpoint they describe.
Status parseLlama2cHeader(const int32_t header[7], const std::string &path,
                          Llama2cConfig &config, uint64_t &fileBytes);
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
