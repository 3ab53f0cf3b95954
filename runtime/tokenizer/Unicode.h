//===- Unicode.h - the Unicode facts kiln's tokenizers need -----*- C++ -*-===//
//
// General categories, lower-casing and accent stripping, from tables
// generated out of Python's unicodedata (scripts/gen-unicode-tables.py), so
// kiln splits text exactly where GPT-2's regex and BERT's basic tokenizer
// do. UTF-8 decoding and encoding of code points live here too.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_TOKENIZER_UNICODE_H
#define KILN_RUNTIME_TOKENIZER_UNICODE_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kiln::runtime::unicode {

/// Unicode general categories (the two-letter names).
enum class Category : uint8_t {
  Cn,
  Lu,
  Ll,
  Lt,
  Lm,
  Lo,
  Mn,
  Mc,
  Me,
  Nd,
  Nl,
  No,
  Pc,
  Pd,
  Ps,
  Pe,
  Pi,
  Pf,
  Po,
  Sm,
  Sc,
  Sk,
  So,
  Zs,
  Zl,
  Zp,
  Cc,
  Cf,
  Cs,
  Co
};

Category category(char32_t cp);
bool isLetter(char32_t cp);      // L*
bool isNumber(char32_t cp);      // N*
bool isPunctuation(char32_t cp); // P*
bool isOther(char32_t cp);       // C* (control, format, unassigned, ...)
/// The White_Space property (what \s matches in GPT-2's Python regex).
bool isWhiteSpace(char32_t cp);
/// The Unicode version of the tables.
const char *version();

/// Python's str.lower() of one code point, appended to `out`.
void appendLower(char32_t cp, std::u32string &out);
/// The code point's canonical decomposition (NFD) without nonspacing marks,
/// appended to `out`: "é" gives "e"; Hangul syllables give their jamo.
void appendStripped(char32_t cp, std::u32string &out);

/// Decodes UTF-8 into code points. Returns false (and the byte offset of the
/// first invalid sequence in `bad`) for invalid UTF-8.
bool decodeUtf8(const std::string &text, std::u32string &out, size_t &bad);
/// Encodes code points as UTF-8, appended to `out`.
void appendUtf8(char32_t cp, std::string &out);
std::string toUtf8(const std::u32string &text);

} // namespace kiln::runtime::unicode

#endif
