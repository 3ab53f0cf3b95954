//===- Tokenizer.h - text to token ids and back -----------------*- C++ -*-===//
//
// Six kinds, one interface (each kind's codec lives in runtime/tokenizer/):
//
//   char           one id per UTF-8 character; the vocabulary is a training
//                  text's distinct characters, sorted (kiln train's default)
//   byte           one id per byte (256 ids)
//   llama2c        llama2.c's tokenizer.bin: SentencePiece-style BPE over
//                  UTF-8 code points with scored merges, byte fallback to
//                  ids 3..258, BOS = 1 and EOS = 2 (the stories models)
//   gpt2           GPT-2's byte-level BPE: GPT-2's pre-tokenization regex,
//                  then ranked merges over bytes; <|endoftext|> is EOS
//   wordpiece      BERT's WordPiece: clean-up, optional lower-casing and
//                  accent stripping, punctuation and CJK splitting, then
//                  greedy longest-match with "##" continuations;
//                  [CLS] text [SEP]
//   sentencepiece  a SentencePiece .model, run by libsentencepiece
//
// Tokenizer::load reads them from their usual files (runtime/tokenizer/
// Load.cpp): tokenizer.bin, encoder.json + vocab.bpe, vocab.json +
// merges.txt, tokenizer.json, vocab.txt, tokenizer.model, or a directory
// holding one of them. Artifacts carry their tokenizer (its TokenizerParts),
// so `kiln generate --prompt=TEXT` and Python's model.generate(prompt=...)
// read and print text. Tokenizers are immutable after construction; copies
// share one codec, and every call is safe from several threads at once.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_TOKENIZER_H
#define KILN_RUNTIME_TOKENIZER_H

#include "runtime/Tensor.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kiln::runtime {

namespace tokenizer {
class Codec;
}

/// Everything a tokenizer is made of: what an artifact stores and what the
/// file readers produce.
struct TokenizerParts {
  std::string kind;                // char, byte, llama2c, gpt2, wordpiece,
                                   // sentencepiece
  std::vector<std::string> pieces; // the piece of each id, in id order
  std::vector<float> scores;       // llama2c: one per piece
  int32_t bos = -1, eos = -1;      // -1 when the kind has none
  std::vector<std::string> merges; // gpt2: "left right", best first
  std::vector<int32_t> special;    // gpt2, wordpiece: ids whose piece is
                                   // recognized whole in text
  std::string model;               // sentencepiece: the serialized model
  bool lowercase = false;          // wordpiece: lower-case, strip accents
};

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
  /// A tokenizer from files: `spec` is a file or a directory, optionally
  /// prefixed by its kind ("gpt2:DIR", "wordpiece:vocab.txt"); see
  /// runtime/tokenizer/Load.cpp for the formats. Errors name the file and
  /// the entry (line, byte offset or JSON field).
  static Status load(const std::string &spec, Tokenizer &out);
  /// Whether the directory holds a file load(dir) would read.
  static bool inDirectory(const std::string &dir);
  /// A tokenizer from its parts (an artifact's tokenizer fields). Checks
  /// everything the kind relies on (a known kind, a non-empty vocabulary,
  /// ids inside it, merges over its pieces, a readable model, ...).
  static Status fromParts(TokenizerParts parts, Tokenizer &out);

  const TokenizerParts &parts() const;
  const std::string &kind() const { return parts().kind; }
  const std::vector<std::string> &pieces() const { return parts().pieces; }
  const std::vector<float> &scores() const { return parts().scores; }
  size_t size() const { return parts().pieces.size(); }
  bool empty() const { return !parts_ || parts_->pieces.empty(); }
  /// Beginning / end of sequence ids, or -1 when the kind has none.
  int32_t bos() const { return parts().bos; }
  int32_t eos() const { return parts().eos; }

  /// Text to ids, as the kind's reference implementation does (llama2c and
  /// sentencepiece with BOS first, wordpiece with [CLS] and [SEP] around).
  /// Errors name the byte offset of what cannot be encoded.
  Status encode(const std::string &text, std::vector<int32_t> &ids) const;

  /// The bytes token `id` stands for when it follows `prev` (-1 at the
  /// start): what a streaming printer appends. The result may be part of a
  /// UTF-8 character (byte tokens); ids outside the vocabulary give "".
  std::string decode(int32_t prev, int32_t id) const;
  /// A whole sequence. decode(encode(text)) == text for the char, byte,
  /// llama2c and gpt2 kinds; wordpiece gives BERT's normalized words.
  std::string decode(const std::vector<int32_t> &ids) const;

private:
  std::shared_ptr<const TokenizerParts> parts_;
  std::shared_ptr<const tokenizer::Codec> codec_;
};

/// Whether a tokenizer fits a model whose logits cover `vocab` ids:
/// llama2.c's tokenizer has exactly the model's vocabulary, the others at
/// most as many ids (a model may pad its vocabulary, as GPT-2 checkpoints
/// padded to 50,304 do). `what` names the tokenizer in the error.
Status checkTokenizerFits(const Tokenizer &tok, int64_t vocab,
                          const std::string &what);

} // namespace kiln::runtime

#endif
