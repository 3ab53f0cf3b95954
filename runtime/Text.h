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

/// How a pre-tokenized data file stores its ids.
enum class TokenWidth { Auto, U16, U32 };

/// What readTokenFile found, for messages.
struct TokenFileInfo {
  std::string format; // "llm.c (uint16 ids)", "uint16 ids", ...
  uint64_t headerBytes = 0;
  unsigned idBytes = 0;
  int64_t maxId = -1;
  uint64_t maxIdIndex = 0; // where the largest id is, as an index
};

/// The header of llm.c's token files: 256 little-endian int32s, the first
/// three the magic 20240520, the version (1: uint16 ids, GPT-2; 2: uint32
/// ids, Llama 3) and the number of tokens.
constexpr int32_t kLlmcTokenMagic = 20240520;
constexpr uint64_t kLlmcTokenHeader = 256 * 4;

/// Reads pre-tokenized training data: llm.c's files (recognized by their
/// header) or a headerless flat array of little-endian ids (nanoGPT's
/// train.bin), `width` wide (Auto: uint16, nanoGPT's choice). The size must
/// be a whole number of ids and agree with an llm.c header's count; files
/// holding more than `maxTokens` ids are refused before anything is read.
Status readTokenFile(const std::string &path, TokenWidth width,
                     uint64_t maxTokens, std::vector<int32_t> &out,
                     TokenFileInfo &info);

/// The most bytes of text, and the most token ids, `kiln train` and
/// kiln.TextDataset read: a thirty-second of the machine's memory each (the
/// model, its gradients and the batches need the rest).
uint64_t trainingDataLimit();

/// The batch sampler's first state for a run's seed (--seed, the seed of
/// kiln.TextDataset).
inline uint64_t dataRngState(uint64_t seed) {
  return seed ^ 0x6b696c6e64617461ull; // "klndata"
}

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
