//===- Text.cpp - character and byte tokenizers, text batches -------------===//
#include "runtime/Text.h"

#include <algorithm>
#include <map>
#include <set>

using namespace kiln::runtime;

namespace {
/// Length of the UTF-8 sequence at `s[i]`, or 0 when it is malformed.
size_t utf8Length(const std::string &s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80         ? 1
             : (c >> 5) == 6  ? 2
             : (c >> 4) == 14 ? 3
             : (c >> 3) == 30 ? 4
                              : 0;
  if (n == 0 || i + n > s.size())
    return 0;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2)
      return 0;
  return n;
}
} // namespace

Status Tokenizer::fromText(const std::string &kind, const std::string &text,
                           Tokenizer &out) {
  out.kind_ = kind;
  out.pieces_.clear();
  if (kind == "byte") {
    for (int b = 0; b < 256; ++b)
      out.pieces_.push_back(std::string(1, static_cast<char>(b)));
    return Status::ok();
  }
  if (kind != "char")
    return Status::error("unknown tokenizer '" + kind +
                         "'; expected char or byte");
  std::set<std::string> chars;
  for (size_t i = 0; i < text.size();) {
    size_t n = utf8Length(text, i);
    if (!n)
      return Status::error("the text is not valid UTF-8 at byte offset " +
                           std::to_string(i) +
                           "; use --tokenizer=byte for binary data");
    chars.insert(text.substr(i, n));
    i += n;
  }
  if (chars.empty())
    return Status::error("the text is empty");
  out.pieces_.assign(chars.begin(), chars.end());
  return Status::ok();
}

Tokenizer Tokenizer::fromPieces(std::string kind,
                                std::vector<std::string> pieces) {
  Tokenizer t;
  t.kind_ = std::move(kind);
  t.pieces_ = std::move(pieces);
  return t;
}

Status Tokenizer::encode(const std::string &text,
                         std::vector<int32_t> &ids) const {
  ids.clear();
  if (kind_ == "byte") {
    for (unsigned char c : text)
      ids.push_back(c);
    return Status::ok();
  }
  std::map<std::string, int32_t> index;
  for (size_t i = 0; i < pieces_.size(); ++i)
    index[pieces_[i]] = static_cast<int32_t>(i);
  for (size_t i = 0; i < text.size();) {
    size_t n = utf8Length(text, i);
    if (!n)
      return Status::error("the text is not valid UTF-8 at byte offset " +
                           std::to_string(i));
    auto it = index.find(text.substr(i, n));
    if (it == index.end())
      return Status::error("the character '" + text.substr(i, n) +
                           "' at byte offset " + std::to_string(i) +
                           " is not in the tokenizer's vocabulary");
    ids.push_back(it->second);
    i += n;
  }
  return Status::ok();
}

std::string Tokenizer::decode(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= pieces_.size())
    return "";
  return pieces_[id];
}

Status TextData::create(std::vector<int32_t> tokens, double evalFraction,
                        int64_t seq, TextData &out) {
  if (!(evalFraction >= 0 && evalFraction < 1))
    return Status::error("the evaluation fraction must be in [0, 1)");
  size_t n = tokens.size();
  size_t held = static_cast<size_t>(static_cast<double>(n) * evalFraction);
  if (evalFraction > 0)
    held = std::max(held, static_cast<size_t>(seq + 1));
  if (n < held + static_cast<size_t>(seq) + 1)
    return Status::error("the text has " + std::to_string(n) +
                         " tokens, too few for windows of " +
                         std::to_string(seq) + " tokens" +
                         (held ? " plus a held-out part" : ""));
  out.tokens_ = std::move(tokens);
  out.split_ = n - held;
  return Status::ok();
}

void TextData::trainBatch(SplitMix64 &rng, int64_t batch, int64_t seq,
                          Tensor &tokens, Tensor &targets) const {
  tokens = Tensor(DType::I32, {batch, seq});
  targets = Tensor(DType::I32, {batch, seq});
  uint64_t range = split_ - static_cast<size_t>(seq); // start < range
  for (int64_t b = 0; b < batch; ++b) {
    size_t start = static_cast<size_t>(rng.next() % range);
    for (int64_t t = 0; t < seq; ++t) {
      tokens.as<int32_t>()[b * seq + t] = tokens_[start + t];
      targets.as<int32_t>()[b * seq + t] = tokens_[start + t + 1];
    }
  }
}

void TextData::evalBatch(int64_t k, int64_t batch, int64_t seq, Tensor &tokens,
                         Tensor &targets) const {
  tokens = Tensor(DType::I32, {batch, seq});
  targets = Tensor(DType::I32, {batch, seq});
  size_t held = tokens_.size() - split_;
  size_t windows = (held - 1) / static_cast<size_t>(seq);
  for (int64_t b = 0; b < batch; ++b) {
    size_t w =
        static_cast<size_t>(k * batch + b) % std::max<size_t>(windows, 1);
    size_t start = split_ + w * static_cast<size_t>(seq);
    for (int64_t t = 0; t < seq; ++t) {
      tokens.as<int32_t>()[b * seq + t] = tokens_[start + t];
      targets.as<int32_t>()[b * seq + t] = tokens_[start + t + 1];
    }
  }
}
