//===- WordPiece.cpp - BERT's WordPiece tokenizer -------------------------===//
//
// As BERT's tokenization.py (BasicTokenizer, then WordpieceTokenizer):
// special tokens ([CLS], [SEP], [MASK], ...) are cut out first; the rest is
// cleaned (NUL, U+FFFD and control characters dropped, whitespace made
// spaces), CJK ideographs get spaces around them, words split at
// whitespace are lower-cased and stripped of accents (when `lowercase`) and
// split at punctuation; each word becomes its longest vocabulary prefix,
// then "##"-prefixed continuations, or [UNK] when that fails or the word is
// longer than 100 characters. The ids go between [CLS] and [SEP].
//
//===----------------------------------------------------------------------===//
#include "runtime/tokenizer/Codec.h"
#include "runtime/tokenizer/Unicode.h"

using namespace kiln::runtime;
using namespace kiln::runtime::tokenizer;
namespace uc = kiln::runtime::unicode;

namespace {

constexpr size_t kMaxWordChars = 100;

bool isBertWhitespace(char32_t c) {
  return c == U' ' || c == U'\t' || c == U'\n' || c == U'\r' ||
         uc::category(c) == uc::Category::Zs;
}
bool isBertControl(char32_t c) {
  return c != U'\t' && c != U'\n' && c != U'\r' && uc::isOther(c);
}
bool isBertPunctuation(char32_t c) {
  return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
         (c >= 123 && c <= 126) || uc::isPunctuation(c);
}
bool isCjk(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/// Python's str.lower() (what BERT lower-cases words with) turns a capital
/// sigma into the final form when a cased letter comes before it and none
/// after it within the word, case-ignorable characters skipped.
bool finalSigma(const std::u32string &s, size_t i) {
  auto ignorable = [](char32_t c) {
    uc::Category k = uc::category(c);
    return k == uc::Category::Mn || k == uc::Category::Me ||
           k == uc::Category::Cf || k == uc::Category::Lm ||
           k == uc::Category::Sk || c == U'\'' || c == U'.' || c == U':' ||
           c == U'\u00B7' || c == U'\u2019';
  };
  auto cased = [](char32_t c) {
    uc::Category k = uc::category(c);
    return k == uc::Category::Lu || k == uc::Category::Ll ||
           k == uc::Category::Lt;
  };
  size_t k = i;
  while (k > 0 && s[k - 1] != U' ' && ignorable(s[k - 1]))
    --k;
  if (k == 0 || s[k - 1] == U' ' || !cased(s[k - 1]))
    return false;
  k = i + 1;
  while (k < s.size() && s[k] != U' ' && ignorable(s[k]))
    ++k;
  return k == s.size() || s[k] == U' ' || !cased(s[k]);
}

class WordPieceCodec : public Codec {
public:
  WordPieceCodec(const TokenizerParts &parts, int32_t unk)
      : parts(parts), index(indexPieces(parts.pieces)), unk(unk) {}

  Status encode(const std::string &text,
                std::vector<int32_t> &ids) const override {
    if (parts.bos >= 0)
      ids.push_back(parts.bos);
    if (Status s = splitSpecial(
            text, parts,
            [&](const std::string &segment, size_t offset) {
              return encodePlain(segment, offset, ids);
            },
            [&](int32_t id) { ids.push_back(id); });
        !s)
      return s;
    if (parts.eos >= 0)
      ids.push_back(parts.eos);
    return Status::ok();
  }

  /// BERT's decoding: pieces joined by spaces, "##" continuations glued to
  /// the piece before them.
  std::string decode(int32_t prev, int32_t id) const override {
    const std::string &piece = parts.pieces[id];
    if (piece.compare(0, 2, "##") == 0 && prev >= 0)
      return piece.substr(2);
    return prev < 0 ? piece : " " + piece;
  }

private:
  Status encodePlain(const std::string &text, size_t offset,
                     std::vector<int32_t> &ids) const {
    std::u32string cps;
    size_t bad;
    if (!uc::decodeUtf8(text, cps, bad))
      return Status::error("the text is not valid UTF-8 at byte offset " +
                           std::to_string(offset + bad));
    // Clean-up and CJK spacing.
    std::u32string clean;
    for (char32_t c : cps) {
      if (c == 0 || c == 0xFFFD || isBertControl(c))
        continue;
      if (isBertWhitespace(c)) {
        clean += U' ';
      } else if (isCjk(c)) {
        clean += U' ';
        clean += c;
        clean += U' ';
      } else {
        clean += c;
      }
    }
    // Words: lower-cased and accent-stripped, split at punctuation.
    std::u32string word, folded;
    auto flush = [&] {
      if (!word.empty())
        wordPieces(word, ids);
      word.clear();
    };
    for (size_t i = 0; i <= clean.size(); ++i) {
      if (i == clean.size() || clean[i] == U' ') {
        flush();
        continue;
      }
      folded.clear();
      if (parts.lowercase) {
        std::u32string lower;
        if (clean[i] == U'\u03A3' && finalSigma(clean, i))
          lower = U"\u03C2";
        else
          uc::appendLower(clean[i], lower);
        for (char32_t c : lower)
          uc::appendStripped(c, folded);
      } else {
        folded += clean[i];
      }
      for (char32_t c : folded) {
        if (isBertPunctuation(c)) {
          flush();
          word += c;
          flush();
        } else if (isBertWhitespace(c)) {
          flush();
        } else {
          word += c;
        }
      }
    }
    return Status::ok();
  }

  void wordPieces(const std::u32string &word, std::vector<int32_t> &ids) const {
    if (word.size() > kMaxWordChars) {
      ids.push_back(unk);
      return;
    }
    size_t mark = ids.size();
    std::string piece;
    for (size_t start = 0; start < word.size();) {
      int32_t found = -1;
      size_t end = word.size();
      for (; end > start; --end) {
        piece = start > 0 ? "##" : "";
        for (size_t k = start; k < end; ++k)
          uc::appendUtf8(word[k], piece);
        if (auto it = index.find(piece); it != index.end()) {
          found = it->second;
          break;
        }
      }
      if (found < 0) {
        ids.resize(mark);
        ids.push_back(unk);
        return;
      }
      ids.push_back(found);
      start = end;
    }
  }

  const TokenizerParts &parts;
  PieceIndex index;
  int32_t unk;
};

} // namespace

Status tokenizer::makeWordPieceCodec(const TokenizerParts &p,
                                     std::unique_ptr<Codec> &out) {
  if (!p.scores.empty() || !p.merges.empty() || !p.model.empty())
    return Status::error("a wordpiece tokenizer has pieces, special tokens "
                         "and a lower-casing flag only");
  int32_t unk = -1;
  for (size_t i = 0; i < p.pieces.size() && unk < 0; ++i)
    if (p.pieces[i] == "[UNK]")
      unk = static_cast<int32_t>(i);
  if (unk < 0)
    return Status::error("the wordpiece vocabulary has no [UNK] token");
  out = std::make_unique<WordPieceCodec>(p, unk);
  return Status::ok();
}
