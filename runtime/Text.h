//===- Text.h - text batches for training -----------------------*- C++ -*-===//
//
// The trainer's data: a text file tokenized (runtime/Tokenizer.h), split into
// a training part and a held-out tail, and cut into random [B, T] windows
// whose targets are the next tokens.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_TEXT_H
#define KILN_RUNTIME_TEXT_H

#include "runtime/Random.h"
#include "runtime/Tensor.h"

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::runtime {

/// Tokenized text with a training part and a held-out evaluation tail.
class TextData {
public:
  /// The last `evalFraction` of the tokens is held out (at least T + 1 of
  /// them when evalFraction > 0).
  static Status create(std::vector<int32_t> tokens, double evalFraction,
                       int64_t seq, TextData &out);

  size_t trainTokens() const { return split_; }
  size_t evalTokens() const { return tokens_.size() - split_; }

  /// A [B, T] batch at random offsets of the training part drawn from `rng`
  /// (the data position a checkpoint saves), with next-token targets.
  void trainBatch(SplitMix64 &rng, int64_t batch, int64_t seq, Tensor &tokens,
                  Tensor &targets) const;
  /// Evaluation batch `k` of [B, T] windows at fixed offsets of the
  /// held-out part.
  void evalBatch(int64_t k, int64_t batch, int64_t seq, Tensor &tokens,
                 Tensor &targets) const;

private:
  std::vector<int32_t> tokens_;
  size_t split_ = 0;
};

} // namespace kiln::runtime

#endif
