//===- Simple.cpp - the char and byte tokenizers --------------------------===//
#include "runtime/tokenizer/Codec.h"

using namespace kiln::runtime;
using namespace kiln::runtime::tokenizer;

namespace {

class ByteCodec : public Codec {
public:
  Status encode(const std::string &text,
                std::vector<int32_t> &ids) const override {
    for (unsigned char c : text)
      ids.push_back(c);
    return Status::ok();
  }
  std::string decode(int32_t, int32_t id) const override {
    return std::string(1, static_cast<char>(id));
  }
};

class CharCodec : public Codec {
public:
  explicit CharCodec(const TokenizerParts &parts)
      : parts(parts), index(indexPieces(parts.pieces)) {}

  Status encode(const std::string &text,
                std::vector<int32_t> &ids) const override {
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
  std::string decode(int32_t, int32_t id) const override {
    return parts.pieces[id];
  }

private:
  const TokenizerParts &parts;
  PieceIndex index;
};

Status noExtras(const TokenizerParts &p) {
  if (!p.scores.empty() || p.bos != -1 || p.eos != -1 || !p.merges.empty() ||
      !p.special.empty() || !p.model.empty())
    return Status::error("a " + p.kind +
                         " tokenizer has only pieces: no scores, BOS, EOS, "
                         "merges, special tokens or model");
  return Status::ok();
}

} // namespace

Status tokenizer::makeByteCodec(const TokenizerParts &p,
                                std::unique_ptr<Codec> &out) {
  if (Status s = noExtras(p); !s)
    return s;
  if (p.pieces.size() != 256)
    return Status::error("a byte tokenizer has 256 tokens, not " +
                         std::to_string(p.pieces.size()));
  out = std::make_unique<ByteCodec>();
  return Status::ok();
}

Status tokenizer::makeCharCodec(const TokenizerParts &p,
                                std::unique_ptr<Codec> &out) {
  if (Status s = noExtras(p); !s)
    return s;
  out = std::make_unique<CharCodec>(p);
  return Status::ok();
}
