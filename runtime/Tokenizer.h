//===- Tokenizer.h - text to token ids and back -----------------*- C++ -*-===//
//
// Three kinds, one interface:
//
//   char     one id per UTF-8 character; the vocabulary is a training text's
//            distinct characters, sorted (kiln train's default)
//   byte     one id per byte (256 ids)
//   llama2c  llama2.c's tokenizer.bin: SentencePiece-style BPE over UTF-8
//            code points with scored merges, byte fallback to ids 3..258,
//            BOS = 1 and EOS = 2 (the stories and Llama 2 models)
//
// Artifacts carry their tokenizer (runtime/KartTokenizer.h), so `kiln
// generate --prompt=TEXT` and Python's model.generate(prompt=...) read and
// print text. Tokenizers are immutable after construction and safe to use
// from several threads at once.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_TOKENIZER_H
#define KILN_RUNTIME_TOKENIZER_H

#include "runtime/Tensor.h"

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace kiln::runtime {

class Tokenizer {
public:
  /// kind is "char" or "byte"; "char" learns its vocabulary from `text`,
  /// which must be valid UTF-8.
  static Status fromText(const std::string &kind, const std::string &text,
                         Tokenizer &out);
  /// Reads a llama2.c tokenizer file: int32 max_token_length, then per token
  /// float32 score, int32 length and `length` bytes, up to the end of the
  /// file. Every count and length is bounded by the file before it is used;
  /// errors name the file, the token and its byte offset.
  static Status readLlama2c(const std::string &path, Tokenizer &out);
  /// A tokenizer from its stored parts (an artifact's tokenizer fields).
  /// `scores`, `bos` and `eos` apply to llama2c only. Checks what the
  /// tokenizer relies on (the kind, a non-empty vocabulary, one score per
  /// piece, the byte-fallback ids and BOS/EOS inside the vocabulary).
  static Status fromParts(std::string kind, std::vector<std::string> pieces,
                          std::vector<float> scores, int32_t bos, int32_t eos,
                          Tokenizer &out);

  const std::string &kind() const { return kind_; }
  const std::vector<std::string> &pieces() const { return pieces_; }
  const std::vector<float> &scores() const { return scores_; }
  size_t size() const { return pieces_.size(); }
  bool empty() const { return pieces_.empty(); }
  /// Beginning / end of sequence ids, or -1 when the kind has none.
  int32_t bos() const { return bos_; }
  int32_t eos() const { return eos_; }

  /// Text to ids. llama2c encodes as llama2.c's run.c does: BOS first, a
  /// leading space for non-empty text, code points looked up (unknown ones
  /// as byte tokens), then the best-scored adjacent merge, repeatedly. char
  /// and byte map each character or byte; char errors name the first
  /// character outside the vocabulary and its byte offset.
  Status encode(const std::string &text, std::vector<int32_t> &ids) const;

  /// The bytes token `id` stands for when it follows `prev` (-1 at the
  /// start): what a streaming printer appends. llama2c drops the leading
  /// space of the piece after BOS, turns `<0xXX>` pieces into their byte and
  /// prints nothing for BOS and EOS. Ids outside the vocabulary are "".
  /// The result may be a part of a UTF-8 character (byte tokens).
  std::string decode(int32_t prev, int32_t id) const;
  /// A whole sequence: decode(encode(text)) == text for every input.
  std::string decode(const std::vector<int32_t> &ids) const;

private:
  int32_t lookup(const std::string &piece) const;
  void mergePairs(std::vector<int32_t> &ids) const;
  void index();

  std::string kind_;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  int32_t bos_ = -1, eos_ = -1;
  std::unordered_map<std::string, int32_t> ids_; // piece -> lowest id
};

/// Whether a tokenizer fits a model whose logits cover `vocab` ids:
/// llama2.c's tokenizer has exactly the model's vocabulary, a char or byte
/// tokenizer at most as many ids (a model may pad its vocabulary). `what`
/// names the tokenizer in the error.
Status checkTokenizerFits(const Tokenizer &tok, int64_t vocab,
                          const std::string &what);

} // namespace kiln::runtime

#endif
