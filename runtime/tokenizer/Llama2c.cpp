//===- Llama2c.cpp - llama2.c's tokenizer.bin -----------------------------===//
#include "runtime/File.h"
#include "runtime/tokenizer/Codec.h"

#include <cmath>
#include <cstring>

using namespace kiln::runtime;
using namespace kiln::runtime::tokenizer;

namespace {

bool isContinuation(unsigned char c) { return (c & 0xC0) == 0x80; }

/// The byte a piece "<0xXX>" stands for, or -1.
int bytePiece(const std::string &piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>')
    return -1;
  int v = 0;
  for (int k = 3; k < 5; ++k) {
    char c = piece[k];
    int d = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                   : -1;
    if (d < 0)
      return -1;
    v = v * 16 + d;
  }
  return v;
}

/// llama2.c reserves ids 0..2 (<unk>, BOS, EOS) and 3..258 for the bytes.
constexpr int32_t kLlamaBos = 1, kLlamaEos = 2, kLlamaByteBase = 3;
constexpr size_t kLlamaMinVocab = kLlamaByteBase + 256;

class Llama2cCodec : public Codec {
public:
  explicit Llama2cCodec(const TokenizerParts &parts)
      : parts(parts), index(indexPieces(parts.pieces)) {}

  /// As llama2.c's run.c: BOS first, a leading space for non-empty text,
  /// code points looked up (unknown ones as byte tokens), then the
  /// best-scored adjacent merge, repeatedly.
  Status encode(const std::string &text,
                std::vector<int32_t> &ids) const override {
    // A unit is a lead byte with up to three continuation bytes after it
    // (what run.c groups, valid UTF-8 or not); a unit outside the
    // vocabulary becomes one byte token per byte.
    auto push = [&](const std::string &unit) {
      if (auto it = index.find(unit); it != index.end()) {
        ids.push_back(it->second);
        return;
      }
      for (unsigned char c : unit)
        ids.push_back(kLlamaByteBase + c);
    };
    ids.push_back(parts.bos);
    if (!text.empty())
      push(" ");
    std::string unit;
    for (size_t i = 0; i < text.size(); ++i) {
      if (!isContinuation(static_cast<unsigned char>(text[i])))
        unit.clear();
      unit += text[i];
      if (i + 1 < text.size() &&
          isContinuation(static_cast<unsigned char>(text[i + 1])) &&
          unit.size() < 4)
        continue;
      push(unit);
      unit.clear();
    }
    std::string pair;
    mergeAdjacent(ids,
                  [&](int32_t l, int32_t r, int32_t &merged, double &priority) {
                    pair = parts.pieces[l];
                    pair += parts.pieces[r];
                    auto it = index.find(pair);
                    if (it == index.end())
                      return false;
                    merged = it->second;
                    priority = parts.scores[merged];
                    return true;
                  });
    return Status::ok();
  }

  /// Drops the leading space of the piece after BOS, turns `<0xXX>` pieces
  /// into their byte and prints nothing for BOS and EOS.
  std::string decode(int32_t prev, int32_t id) const override {
    const std::string &piece = parts.pieces[id];
    if (id == parts.bos || id == parts.eos)
      return "";
    if (int b = bytePiece(piece); b >= 0)
      return std::string(1, static_cast<char>(b));
    if (prev == parts.bos && !piece.empty() && piece[0] == ' ')
      return piece.substr(1);
    return piece;
  }

private:
  const TokenizerParts &parts;
  PieceIndex index;
};

} // namespace

Status tokenizer::makeLlama2cCodec(const TokenizerParts &p,
                                   std::unique_ptr<Codec> &out) {
  if (p.pieces.size() < kLlamaMinVocab)
    return Status::error(
        "a llama2.c tokenizer has at least " + std::to_string(kLlamaMinVocab) +
        " tokens (<unk>, BOS, EOS and 256 byte tokens), this one has " +
        std::to_string(p.pieces.size()));
  if (p.scores.size() != p.pieces.size())
    return Status::error("the tokenizer has " +
                         std::to_string(p.pieces.size()) + " tokens but " +
                         std::to_string(p.scores.size()) + " scores");
  for (size_t i = 0; i < p.scores.size(); ++i)
    if (!std::isfinite(p.scores[i]))
      return Status::error("the score of token " + std::to_string(i) +
                           " is not a finite number");
  if (p.bos < 0 || p.eos < 0)
    return Status::error("a llama2.c tokenizer needs BOS and EOS ids");
  if (!p.merges.empty() || !p.special.empty() || !p.model.empty())
    return Status::error("a llama2.c tokenizer has no merges, special tokens "
                         "or model");
  for (int b = 0; b < 256; ++b)
    if (bytePiece(p.pieces[kLlamaByteBase + b]) != b)
      return Status::error("token " + std::to_string(kLlamaByteBase + b) +
                           " should be the byte token <0x" +
                           "0123456789ABCDEF"[b >> 4] +
                           "0123456789ABCDEF"[b & 15] + ">");
  out = std::make_unique<Llama2cCodec>(p);
  return Status::ok();
}

Status Tokenizer::readLlama2c(const std::string &path, Tokenizer &out) {
  std::string bytes;
  if (Status s = readFile(path, bytes, kMaxTokenizerFile, "llama2.c tokenizer");
      !s)
    return s;
  uint64_t size = bytes.size();
  auto int32At = [&](uint64_t at) {
    int32_t v;
    std::memcpy(&v, bytes.data() + at, 4);
    return v;
  };
  if (size < 4)
    return Status::error(path + ": " + std::to_string(size) +
                         " bytes is too short for a llama2.c tokenizer (it "
                         "starts with a 4-byte max_token_length)");
  int32_t maxLength = int32At(0);
  if (maxLength <= 0 || static_cast<uint64_t>(maxLength) > size)
    return Status::error(path + ": max_token_length " +
                         std::to_string(maxLength) +
                         " at byte offset 0 is not a plausible length; is "
                         "this a llama2.c tokenizer file?");
  TokenizerParts parts;
  parts.kind = "llama2c";
  parts.bos = kLlamaBos;
  parts.eos = kLlamaEos;
  for (uint64_t at = 4; at < size;) {
    std::string token = "token " + std::to_string(parts.pieces.size());
    if (size - at < 8)
      return Status::error(path + ": " + token + " at byte offset " +
                           std::to_string(at) +
                           " is truncated: its score "
                           "and length need 8 bytes, " +
                           std::to_string(size - at) + " remain");
    float score;
    std::memcpy(&score, bytes.data() + at, 4);
    int32_t length = int32At(at + 4);
    if (!std::isfinite(score))
      return Status::error(path + ": " + token + " at byte offset " +
                           std::to_string(at) +
                           " has a score that is not "
                           "a finite number");
    if (length < 0 || length > maxLength)
      return Status::error(path + ": " + token + " at byte offset " +
                           std::to_string(at + 4) + " has length " +
                           std::to_string(length) + ", outside [0, " +
                           std::to_string(maxLength) + "] (max_token_length)");
    if (static_cast<uint64_t>(length) > size - at - 8)
      return Status::error(path + ": " + token + " at byte offset " +
                           std::to_string(at + 4) + " has length " +
                           std::to_string(length) + ", past the end of the " +
                           std::to_string(size) + "-byte file");
    parts.pieces.push_back(bytes.substr(at + 8, static_cast<size_t>(length)));
    parts.scores.push_back(score);
    at += 8 + static_cast<uint64_t>(length);
  }
  if (Status s = fromParts(std::move(parts), out); !s)
    return Status::error(path + ": " + s.text());
  return Status::ok();
}
