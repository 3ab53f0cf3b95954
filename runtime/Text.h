//===- Text.h - character and byte tokenizers, text batches ------*- C++
//-*-===//
//
// The trainer's data: a text file tokenized by characters (UTF-8 code points;
// the vocabulary is the file's distinct characters, sorted) or by bytes
// (256 ids), split into a training part and a held-out tail, and cut into
// random [B, T] windows whose targets are the next tokens.
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

class Tokenizer {
public:
  /// kind is "char" or "byte"; "char" learns its vocabulary from `text`,
  /// which must be valid UTF-8.
  static Status fromText(const std::string &kind, const std::string &text,
                         Tokenizer &out);
  /// A tokenizer from its pieces (as stored in an artifact).
  static Tokenizer fromPieces(std::string kind,
                              std::vector<std::string> pieces);

  const std::string &kind() const { return kind_; }
  const std::vector<std::string> &pieces() const { return pieces_; }
  size_t size() const { return pieces_.size(); }

  /// Errors name the first character outside the vocabulary and its byte
  /// offset.
  Status encode(const std::string &text, std::vector<int32_t> &ids) const;
  std::string decode(int32_t id) const;

private:
  std::string kind_;
  std::vector<std::string> pieces_;
};

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
