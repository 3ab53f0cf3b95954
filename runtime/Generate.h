//===- Generate.h - autoregressive decoding ---------------------*- C++ -*-===//
#ifndef KILN_RUNTIME_GENERATE_H
#define KILN_RUNTIME_GENERATE_H

#include "runtime/Model.h"

#include <cstdint>
#include <functional>
#include <vector>

namespace kiln::runtime {

struct GenerateOptions {
  int64_t maxTokens = 16;
  double temperature = 1.0; // 0: greedy argmax
  double topP = 1.0;        // nucleus sampling: keep the smallest set of
                            // tokens whose probability reaches top_p
  uint64_t seed = 0;        // sampling is reproducible on every machine
  /// Generation ends early when the model picks one of these (which is not
  /// returned): a tokenizer's BOS and EOS (see stopTokens()).
  std::vector<int32_t> stopTokens;
};

/// The ids that end a generated sequence for `tokenizer`: llama2.c's BOS
/// (run.c stops there: BOS delimits its training stories) and EOS; none for
/// char and byte tokenizers.
std::vector<int32_t> stopTokens(const Tokenizer &tokenizer);

/// Continues `prompt` with a decoder model whose `forward` maps token ids
/// [B, T] to logits [B, T, vocab], one token at a time (the whole sequence
/// is recomputed each step; models with learned positions see the newest
/// n_positions / max_position_embeddings tokens). `onToken`, if set, sees
/// each new token as it is chosen. Shared by `kiln generate` and Python.
Status generate(Model &model, const std::vector<int32_t> &prompt,
                const GenerateOptions &options, std::vector<int32_t> &out,
                const std::function<void(int32_t)> &onToken = {});

} // namespace kiln::runtime

#endif
