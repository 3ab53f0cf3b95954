//===- Lexer.cpp - tokens of the kiln language ----------------------------===//
#include "frontend/Lexer.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/ConvertUTF.h"
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <string>

using namespace kiln;

const char *kiln::tokName(Tok t) {
  switch (t) {
  case Tok::Eof:
    return "end of file";
  case Tok::Error:
    return "invalid token";
  case Tok::Ident:
    return "a name";
  case Tok::Int:
    return "an integer";
  case Tok::Float:
    return "a number";
  case Tok::KwReturn:
    return "'return'";
  case Tok::KwTrue:
    return "'true'";
  case Tok::KwFalse:
    return "'false'";
  case Tok::KwIf:
    return "'if'";
  case Tok::KwElse:
    return "'else'";
  case Tok::KwNot:
    return "'not'";
  case Tok::LParen:
    return "'('";
  case Tok::RParen:
    return "')'";
  case Tok::LBracket:
    return "'['";
  case Tok::RBracket:
    return "']'";
  case Tok::LBrace:
    return "'{'";
  case Tok::RBrace:
    return "'}'";
  case Tok::Comma:
    return "','";
  case Tok::Colon:
    return "':'";
  case Tok::Semicolon:
    return "';'";
  case Tok::Dot:
    return "'.'";
  case Tok::Equal:
    return "'='";
  case Tok::EqualEqual:
    return "'=='";
  case Tok::NotEqual:
    return "'!='";
  case Tok::Arrow:
    return "'->'";
  case Tok::Plus:
    return "'+'";
  case Tok::Minus:
    return "'-'";
  case Tok::Star:
    return "'*'";
  case Tok::StarStar:
    return "'**'";
  case Tok::Slash:
    return "'/'";
  case Tok::At:
    return "'@'";
  }
  return "token";
}

bool kiln::checkSourceText(llvm::StringRef buffer, Diagnostics &diags) {
  const auto *p = reinterpret_cast<const llvm::UTF8 *>(buffer.begin());
  const auto *end = reinterpret_cast<const llvm::UTF8 *>(buffer.end());
  while (p < end) {
    if (*p == 0) {
      diags.error(
          llvm::SMLoc::getFromPointer(reinterpret_cast<const char *>(p)),
          "NUL byte in source; this looks like a binary file, not a "
          ".kiln model");
      return false;
    }
    if (*p < 0x80) {
      ++p;
      continue;
    }
    unsigned len = llvm::getNumBytesForUTF8(*p);
    if (p + len > end || !llvm::isLegalUTF8Sequence(p, p + len)) {
      diags.error(
          llvm::SMLoc::getFromPointer(reinterpret_cast<const char *>(p)),
          "invalid UTF-8 byte 0x" + llvm::utohexstr(*p, false, 2) +
              " at offset " +
              llvm::Twine(reinterpret_cast<const char *>(p) - buffer.data()) +
              "; save the file as UTF-8 text");
      return false;
    }
    p += len;
  }
  return true;
}

Lexer::Lexer(llvm::StringRef buffer, Diagnostics &diags)
    : buffer(buffer), cur(buffer.begin()), diags(diags) {}

Token Lexer::make(Tok kind, const char *start) {
  Token t;
  t.kind = kind;
  t.text = llvm::StringRef(start, cur - start);
  return t;
}

Token Lexer::error(const char *at, const llvm::Twine &msg) {
  diags.error(llvm::SMLoc::getFromPointer(at), msg);
  Token t;
  t.kind = Tok::Error;
  t.text = llvm::StringRef(at, 1);
  return t;
}

Token Lexer::next() {
  const char *end = buffer.end();
  // Skip whitespace and comments.
  while (cur < end) {
    if (*cur == ' ' || *cur == '\t' || *cur == '\n' || *cur == '\r') {
      ++cur;
    } else if (*cur == '#') {
      while (cur < end && *cur != '\n')
        ++cur;
    } else {
      break;
    }
  }
  if (cur >= end) {
    Token t;
    t.kind = Tok::Eof;
    t.text = llvm::StringRef(end, 0);
    return t;
  }
  const char *start = cur;
  char c = *cur++;
  if (llvm::isAlpha(c) || c == '_')
    return lexIdent(start);
  if (llvm::isDigit(c) || (c == '.' && cur < end && llvm::isDigit(*cur)))
    return lexNumber(start);
  switch (c) {
  case '(':
    return make(Tok::LParen, start);
  case ')':
    return make(Tok::RParen, start);
  case '[':
    return make(Tok::LBracket, start);
  case ']':
    return make(Tok::RBracket, start);
  case '{':
    return make(Tok::LBrace, start);
  case '}':
    return make(Tok::RBrace, start);
  case ',':
    return make(Tok::Comma, start);
  case ':':
    return make(Tok::Colon, start);
  case ';':
    return make(Tok::Semicolon, start);
  case '.':
    return make(Tok::Dot, start);
  case '=':
    if (cur < end && *cur == '=') {
      ++cur;
      return make(Tok::EqualEqual, start);
    }
    return make(Tok::Equal, start);
  case '!':
    if (cur < end && *cur == '=') {
      ++cur;
      return make(Tok::NotEqual, start);
    }
    break;
  case '+':
    return make(Tok::Plus, start);
  case '/':
    return make(Tok::Slash, start);
  case '@':
    return make(Tok::At, start);
  case '-':
    if (cur < end && *cur == '>') {
      ++cur;
      return make(Tok::Arrow, start);
    }
    return make(Tok::Minus, start);
  case '*':
    if (cur < end && *cur == '*') {
      ++cur;
      return make(Tok::StarStar, start);
    }
    return make(Tok::Star, start);
  default:
    break;
  }
  if (static_cast<unsigned char>(c) >= 0x80)
    return error(start, "unexpected non-ASCII character; names and operators "
                        "are ASCII (non-ASCII text is allowed in comments)");
  if (llvm::isPrint(c))
    return error(start,
                 llvm::Twine("unexpected character '") + llvm::Twine(c) + "'");
  return error(start,
               "unexpected control character 0x" +
                   llvm::utohexstr(static_cast<unsigned char>(c), false, 2));
}

Token Lexer::lexIdent(const char *start) {
  while (cur < buffer.end() && (llvm::isAlnum(*cur) || *cur == '_'))
    ++cur;
  llvm::StringRef text(start, cur - start);
  // Messages quote names: a name of megabytes would be echoed in full.
  if (text.size() > kMaxNameLength)
    return error(start, "a name of " + llvm::Twine(text.size()) +
                            " characters is too long; names have at most " +
                            llvm::Twine(kMaxNameLength) + " characters");
  Tok kind = llvm::StringSwitch<Tok>(text)
                 .Case("return", Tok::KwReturn)
                 .Case("true", Tok::KwTrue)
                 .Case("false", Tok::KwFalse)
                 .Case("if", Tok::KwIf)
                 .Case("else", Tok::KwElse)
                 .Case("not", Tok::KwNot)
                 .Default(Tok::Ident);
  return make(kind, start);
}

Token Lexer::lexNumber(const char *start) {
  const char *end = buffer.end();
  bool isFloat = *start == '.'; // ".5": the dot is already consumed
  while (cur < end && llvm::isDigit(*cur))
    ++cur;
  if (!isFloat && cur < end && *cur == '.' &&
      !(cur + 1 < end && !llvm::isDigit(cur[1]) &&
        (llvm::isAlpha(cur[1]) || cur[1] == '_'))) {
    isFloat = true;
    ++cur;
    while (cur < end && llvm::isDigit(*cur))
      ++cur;
  }
  if (cur < end && (*cur == 'e' || *cur == 'E')) {
    const char *expStart = cur++;
    if (cur < end && (*cur == '+' || *cur == '-'))
      ++cur;
    if (cur >= end || !llvm::isDigit(*cur))
      return error(expStart, "malformed exponent in number; write e.g. 1e-5");
    while (cur < end && llvm::isDigit(*cur))
      ++cur;
    isFloat = true;
  }
  if (cur < end && (llvm::isAlpha(*cur) || *cur == '_'))
    return error(cur, llvm::Twine("unexpected '") + llvm::Twine(*cur) +
                          "' after number");
  Token t = make(isFloat ? Tok::Float : Tok::Int, start);
  std::string text = t.text.str();
  if (isFloat) {
    errno = 0;
    t.floatValue = std::strtod(text.c_str(), nullptr);
    if (errno == ERANGE && std::isinf(t.floatValue))
      return error(start, "number '" + text + "' is too large for a float");
  } else {
    uint64_t v;
    if (t.text.getAsInteger(10, v) || v > static_cast<uint64_t>(INT64_MAX))
      return error(start, "integer '" + text +
                              "' is too large (the maximum is 2^63 - 1)");
    t.intValue = static_cast<int64_t>(v);
  }
  return t;
}
