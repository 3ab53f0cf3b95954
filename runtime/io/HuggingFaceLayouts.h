//===- HuggingFaceLayouts.h - per-architecture name mapping -----*- C++ -*-===//
#ifndef KILN_RUNTIME_IO_HUGGINGFACELAYOUTS_H
#define KILN_RUNTIME_IO_HUGGINGFACELAYOUTS_H

#include "runtime/HuggingFace.h"

namespace kiln::runtime::hf {

/// How one Hugging Face model_type maps onto kiln's example of it.
struct Layout {
  const char *modelType;
  /// Checks config.json's settings (`where` is its path, for messages).
  Status (*check)(const HuggingFaceConfig &config, const std::string &where);
  /// Renames, drops and re-lays out the tensors in place.
  Status (*map)(const HuggingFaceConfig &config, NamedTensors &tensors);
  /// The config class's defaults that differ from kiln's example, for
  /// entries config.json leaves out (LlamaConfig: tie_word_embeddings is
  /// false), spelled as overrides.
  struct Default {
    const char *key, *value;
  };
  std::vector<Default> defaults;
};

/// The layout of `modelType`, or null.
const Layout *findLayout(const std::string &modelType);
/// "gpt2, llama, bert, t5".
std::string layoutNames();

} // namespace kiln::runtime::hf

#endif
