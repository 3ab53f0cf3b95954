//===- HuggingFace.h - Hugging Face model directories -----------*- C++ -*-===//
//
// A Hugging Face checkpoint is a directory: config.json (the architecture and
// its hyperparameters) and the weights in model.safetensors, or in shards
// listed by model.safetensors.index.json. Hugging Face's tensor names and
// layouts differ from kiln's examples in a few places per architecture
// (GPT-2's Conv1D weights are stored transposed, Llama's q/k rows are
// permuted for rotate-half RoPE, BERT and T5 nest and prefix their names);
// readHuggingFace maps them onto the names and layouts of examples/*.kiln,
// from one table per `model_type` (runtime/io/HuggingFaceLayouts.cpp).
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_HUGGINGFACE_H
#define KILN_RUNTIME_HUGGINGFACE_H

#include "runtime/Json.h"
#include "runtime/Safetensors.h"

#include <string>
#include <utility>
#include <vector>

namespace kiln::runtime {

/// config.json of a Hugging Face model directory.
struct HuggingFaceConfig {
  std::string dir;
  /// config.json's "model_type" ("gpt2", "llama", "bert", "t5").
  std::string modelType;
  JsonValue json;

  /// The value of a number or boolean entry as a hyperparameter override
  /// would spell it ("768", "1e-05", "true"), or, for an entry config.json
  /// leaves out, the config class's default where kiln's example differs
  /// (Llama's tie_word_embeddings: false); false when there is none.
  bool scalar(const std::string &key, std::string &text) const;
  /// An integer entry, or `fallback` when absent.
  int64_t integer(const std::string &key, int64_t fallback) const;
};

/// Whether `path` is a directory (the caller then reads it as a Hugging
/// Face checkpoint).
bool isDirectory(const std::string &path);

/// Reads DIR/config.json and checks that kiln can map its model_type and
/// settings: an unknown model_type, or a setting the mapping cannot honour
/// (a GPT-2 activation other than gelu_new, Llama's rope_scaling, T5's
/// gated feed-forward), is an error naming config.json and the key.
Status readHuggingFaceConfig(const std::string &dir, HuggingFaceConfig &out);

/// The model types readHuggingFace maps, for messages ("gpt2, llama, ...").
std::string huggingFaceModelTypes();

/// Reads the weights of a directory whose config was read: model.safetensors,
/// or every shard model.safetensors.index.json lists (shard names must be
/// plain file names inside the directory; every tensor must be in the shard
/// the index names). A directory with only pytorch_model.bin is refused (a
/// pickle runs code when loaded; the message says how to convert it). F16
/// and BF16 tensors become F32. Names and layouts are mapped to kiln's
/// examples; tensors the examples do not use (GPT-2's causal-mask buffers,
/// BERT's pooler, tied copies of the embedding) are dropped. `maxTensors`
/// bounds what one file may list, as for readSafetensors.
Status readHuggingFace(const HuggingFaceConfig &config, NamedTensors &out,
                       size_t maxTensors = kMaxSafetensorsTensors);

/// Converts F16 and BF16 tensors to F32 in place (other types are kept).
void widenHalfTensors(NamedTensors &tensors);

} // namespace kiln::runtime

#endif
