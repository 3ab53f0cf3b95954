//===- Unicode.cpp - the Unicode facts kiln's tokenizers need -------------===//
#include "runtime/tokenizer/Unicode.h"

#include <algorithm>
#include <iterator>

using namespace kiln::runtime;
using namespace kiln::runtime::unicode;

namespace {

struct CategoryRun {
  uint32_t first;
  uint8_t category;
};
struct Mapping {
  uint32_t from;
  uint8_t length;
  uint32_t to[3];
};

#include "runtime/tokenizer/UnicodeData.inc"

const Mapping *findMapping(const Mapping *begin, const Mapping *end,
                           char32_t cp) {
  const Mapping *it = std::lower_bound(
      begin, end, cp, [](const Mapping &m, char32_t c) { return m.from < c; });
  return it != end && it->from == cp ? it : nullptr;
}

// Hangul syllables decompose by rule (Unicode 3.12).
constexpr char32_t kHangulFirst = 0xAC00, kHangulCount = 11172;
constexpr char32_t kLeadBase = 0x1100, kVowelBase = 0x1161, kTrailBase = 0x11A7;
constexpr char32_t kVowelCount = 21, kTrailCount = 28;

} // namespace

Category unicode::category(char32_t cp) {
  if (cp > 0x10FFFF)
    return Category::Cn;
  const CategoryRun *end = std::end(kCategoryRuns);
  const CategoryRun *it = std::upper_bound(
      std::begin(kCategoryRuns), end, cp,
      [](char32_t c, const CategoryRun &r) { return c < r.first; });
  return static_cast<Category>((it - 1)->category); // runs start at 0
}

bool unicode::isLetter(char32_t cp) {
  Category c = category(cp);
  return c >= Category::Lu && c <= Category::Lo;
}
bool unicode::isNumber(char32_t cp) {
  Category c = category(cp);
  return c >= Category::Nd && c <= Category::No;
}
bool unicode::isPunctuation(char32_t cp) {
  Category c = category(cp);
  return c >= Category::Pc && c <= Category::Po;
}
bool unicode::isOther(char32_t cp) {
  Category c = category(cp);
  return c == Category::Cn || c >= Category::Cc;
}
bool unicode::isWhiteSpace(char32_t cp) {
  return (cp >= 0x9 && cp <= 0xD) || cp == 0x20 || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}
const char *unicode::version() { return KILN_UNICODE_VERSION; }

void unicode::appendLower(char32_t cp, std::u32string &out) {
  if (cp < 0x80) {
    out += cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
    return;
  }
  if (const Mapping *m =
          findMapping(std::begin(kLower), std::end(kLower), cp)) {
    out.append(m->to, m->to + m->length);
    return;
  }
  out += cp;
}

void unicode::appendStripped(char32_t cp, std::u32string &out) {
  if (cp < 0x80) {
    out += cp;
    return;
  }
  if (cp >= kHangulFirst && cp < kHangulFirst + kHangulCount) {
    char32_t s = cp - kHangulFirst;
    out += kLeadBase + s / (kVowelCount * kTrailCount);
    out += kVowelBase + (s % (kVowelCount * kTrailCount)) / kTrailCount;
    if (char32_t t = s % kTrailCount)
      out += kTrailBase + t;
    return;
  }
  if (const Mapping *m =
          findMapping(std::begin(kStripped), std::end(kStripped), cp)) {
    out.append(m->to, m->to + m->length);
    return;
  }
  if (category(cp) != Category::Mn)
    out += cp;
}

bool unicode::decodeUtf8(const std::string &text, std::u32string &out,
                         size_t &bad) {
  out.clear();
  out.reserve(text.size());
  const auto *s = reinterpret_cast<const unsigned char *>(text.data());
  size_t n = text.size();
  for (size_t i = 0; i < n;) {
    unsigned char c = s[i];
    size_t len = c < 0x80         ? 1
                 : (c >> 5) == 6  ? 2
                 : (c >> 4) == 14 ? 3
                 : (c >> 3) == 30 ? 4
                                  : 0;
    char32_t cp = len == 1   ? c
                  : len == 2 ? c & 0x1F
                  : len == 3 ? c & 0x0F
                             : c & 0x07;
    bool ok = len && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      ok = (s[i + k] & 0xC0) == 0x80;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    // No overlong forms, surrogates or code points past U+10FFFF.
    static constexpr char32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (ok &&
        (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)))
      ok = false;
    if (!ok) {
      bad = i;
      return false;
    }
    out += cp;
    i += len;
  }
  return true;
}

void unicode::appendUtf8(char32_t cp, std::string &out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string unicode::toUtf8(const std::u32string &text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t cp : text)
    appendUtf8(cp, out);
  return out;
}
