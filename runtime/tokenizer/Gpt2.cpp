//===- Gpt2.cpp - GPT-2's byte-level BPE ----------------------------------===//
//
// As OpenAI's encoder.py: special tokens (<|endoftext|>) are cut out first;
// the rest is split by GPT-2's pattern
//
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// (matched by hand over code points, \s being Unicode White_Space); each
// piece's UTF-8 bytes become the byte symbols of GPT-2's printable byte
// alphabet, and ranked merges join adjacent symbols, the best-ranked pair
// first.
//
//===----------------------------------------------------------------------===//
#include "runtime/tokenizer/Codec.h"
#include "runtime/tokenizer/Unicode.h"

#include <array>

using namespace kiln::runtime;
using namespace kiln::runtime::tokenizer;
namespace uc = kiln::runtime::unicode;

namespace {

/// GPT-2's map from bytes to printable code points: the printable Latin-1
/// bytes stand for themselves, the others for 256, 257, ... in order.
std::array<char32_t, 256> byteAlphabet() {
  std::array<char32_t, 256> table{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) ||
                     (b >= 0xAE && b <= 0xFF);
    table[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return table;
}

/// The end of the pre-token starting at s[i] (GPT-2's pattern, first
/// alternative that matches).
size_t preTokenEnd(const std::u32string &s, size_t i) {
  size_t n = s.size();
  auto space = [&](size_t k) { return k < n && uc::isWhiteSpace(s[k]); };
  auto other = [&](size_t k) {
    return k < n && !uc::isWhiteSpace(s[k]) && !uc::isLetter(s[k]) &&
           !uc::isNumber(s[k]);
  };
  if (s[i] == U'\'' && i + 1 < n) {
    char32_t a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
    if (a == U's' || a == U't' || a == U'm' || a == U'd')
      return i + 2;
    if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') ||
        (a == U'l' && b == U'l'))
      return i + 3;
  }
  size_t j = s[i] == U' ' ? i + 1 : i; // the optional leading space
  for (auto cls : {+[](char32_t c) { return uc::isLetter(c); },
                   +[](char32_t c) { return uc::isNumber(c); }}) {
    if (j < n && cls(s[j])) {
      size_t k = j;
      while (k < n && cls(s[k]))
        ++k;
      return k;
    }
  }
  if (other(j)) {
    size_t k = j;
    while (other(k))
      ++k;
    return k;
  }
  // \s+(?!\S): a whitespace run, less its last character when text follows
  // (that one starts the next piece); then \s+.
  size_t k = i;
  while (space(k))
    ++k;
  if (k < n && k - i >= 2)
    return k - 1;
  return k;
}

class Gpt2Codec : public Codec {
public:
  Status build(const TokenizerParts &p) {
    parts = &p;
    PieceIndex index = indexPieces(p.pieces);
    auto alphabet = byteAlphabet();
    std::array<std::string, 256> symbols;
    for (int b = 0; b < 256; ++b) {
      uc::appendUtf8(alphabet[b], symbols[b]);
      auto it = index.find(symbols[b]);
      if (it == index.end())
        return Status::error("the vocabulary lacks the symbol of byte " +
                             std::to_string(b) + " ('" + symbols[b] +
                             "'); is this GPT-2's byte-level BPE?");
      byteIds[b] = it->second;
    }
    // What each id prints: its symbols turned back into bytes.
    std::unordered_map<char32_t, int> byteOf;
    for (int b = 0; b < 256; ++b)
      byteOf[alphabet[b]] = b;
    std::vector<bool> isSpecial(p.pieces.size(), false);
    for (int32_t id : p.special)
      isSpecial[id] = true;
    bytes.resize(p.pieces.size());
    std::u32string cps;
    for (size_t id = 0; id < p.pieces.size(); ++id) {
      size_t bad;
      if (isSpecial[id] || !uc::decodeUtf8(p.pieces[id], cps, bad)) {
        bytes[id] = p.pieces[id]; // special tokens print their text
        continue;
      }
      std::string out;
      bool plain = true;
      for (char32_t c : cps) {
        auto it = byteOf.find(c);
        if (it == byteOf.end()) {
          plain = false;
          break;
        }
        out += static_cast<char>(it->second);
      }
      bytes[id] = plain ? out : p.pieces[id];
    }
    for (size_t r = 0; r < p.merges.size(); ++r) {
      const std::string &m = p.merges[r];
      size_t sp = m.find(' ');
      std::string where = "merge " + std::to_string(r + 1) + " '" + m + "'";
      if (sp == std::string::npos || sp == 0 || sp + 1 == m.size() ||
          m.find(' ', sp + 1) != std::string::npos)
        return Status::error(where + " is not two pieces separated by one "
                                     "space");
      auto left = index.find(m.substr(0, sp));
      auto right = index.find(m.substr(sp + 1));
      auto merged = index.find(m.substr(0, sp) + m.substr(sp + 1));
      if (left == index.end() || right == index.end())
        return Status::error(where + " names a piece outside the vocabulary");
      if (merged == index.end())
        return Status::error(where + " makes '" + m.substr(0, sp) +
                             m.substr(sp + 1) +
                             "', which is not in the vocabulary");
      uint64_t key = pairKey(left->second, right->second);
      ranks.emplace(key, Rank{static_cast<int32_t>(r), merged->second});
    }
    return Status::ok();
  }

  Status encode(const std::string &text,
                std::vector<int32_t> &ids) const override {
    return splitSpecial(
        text, *parts,
        [&](const std::string &segment, size_t offset) {
          return encodePlain(segment, offset, ids);
        },
        [&](int32_t id) { ids.push_back(id); });
  }

  std::string decode(int32_t, int32_t id) const override { return bytes[id]; }

private:
  struct Rank {
    int32_t rank, merged;
  };
  static uint64_t pairKey(int32_t l, int32_t r) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) |
           static_cast<uint32_t>(r);
  }

  Status encodePlain(const std::string &text, size_t base,
                     std::vector<int32_t> &ids) const {
    std::u32string cps;
    size_t bad;
    if (!uc::decodeUtf8(text, cps, bad))
      return Status::error("the text is not valid UTF-8 at byte offset " +
                           std::to_string(base + bad));
    std::vector<int32_t> word;
    std::string utf8;
    for (size_t i = 0; i < cps.size();) {
      size_t end = preTokenEnd(cps, i);
      utf8.clear();
      for (size_t k = i; k < end; ++k)
        uc::appendUtf8(cps[k], utf8);
      word.clear();
      for (unsigned char c : utf8)
        word.push_back(byteIds[c]);
      mergeAdjacent(
          word, [&](int32_t l, int32_t r, int32_t &merged, double &priority) {
            auto it = ranks.find(pairKey(l, r));
            if (it == ranks.end())
              return false;
            merged = it->second.merged;
            priority = -static_cast<double>(it->second.rank);
            return true;
          });
      ids.insert(ids.end(), word.begin(), word.end());
      i = end;
    }
    return Status::ok();
  }

  const TokenizerParts *parts = nullptr;
  std::array<int32_t, 256> byteIds{};
  std::vector<std::string> bytes;
  std::unordered_map<uint64_t, Rank> ranks;
};

} // namespace

Status tokenizer::makeGpt2Codec(const TokenizerParts &p,
                                std::unique_ptr<Codec> &out) {
  if (!p.scores.empty() || !p.model.empty() || p.lowercase)
    return Status::error("a gpt2 tokenizer has pieces, merges and special "
                         "tokens only");
  auto codec = std::make_unique<Gpt2Codec>();
  if (Status s = codec->build(p); !s)
    return s;
  out = std::move(codec);
  return Status::ok();
}
