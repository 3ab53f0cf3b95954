//===- Lexer.h - tokens of the kiln language --------------------*- C++ -*-===//
#ifndef KILN_FRONTEND_LEXER_H
#define KILN_FRONTEND_LEXER_H

#include "frontend/Diagnostics.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/SMLoc.h"
#include <cstddef>
#include <cstdint>

namespace kiln {

enum class Tok {
  Eof,
  Error,
  Ident,
  Int,
  Float,
  // Reserved words. `model`, `dim`, `param`, `block` and `fn` are keywords
  // only where an item starts, so they stay usable in parameter paths
  // (model.layers.0...) and as names.
  KwReturn,
  KwTrue,
  KwFalse,
  KwIf,
  KwElse,
  KwNot,
  // Punctuation and operators.
  LParen,
  RParen,
  LBracket,
  RBracket,
  LBrace,
  RBrace,
  Comma,
  Colon,
  Semicolon,
  Dot,
  Equal,
  EqualEqual,
  NotEqual,
  Arrow,
  Plus,
  Minus,
  Star,
  StarStar,
  Slash,
  At,
};

/// The longest name the language accepts (error messages quote names).
constexpr size_t kMaxNameLength = 256;

/// Human-readable spelling of a token kind, for "expected X" messages.
const char *tokName(Tok t);

struct Token {
  Tok kind = Tok::Eof;
  llvm::StringRef text;
  int64_t intValue = 0;
  double floatValue = 0;
  llvm::SMLoc loc() const { return llvm::SMLoc::getFromPointer(text.data()); }
};

/// Splits a .kiln buffer into tokens. `#` starts a comment that runs to the end
/// of the line; newlines are whitespace. Reports malformed input (bytes that
/// are not text, bad numbers) through the diagnostics and returns Tok::Error.
class Lexer {
public:
  Lexer(llvm::StringRef buffer, Diagnostics &diags);
  Token next();

private:
  Token make(Tok kind, const char *start);
  Token error(const char *at, const llvm::Twine &msg);
  Token lexNumber(const char *start);
  Token lexIdent(const char *start);

  llvm::StringRef buffer;
  const char *cur;
  Diagnostics &diags;
};

/// Checks that a buffer is text a lexer can read: valid UTF-8 and no NUL
/// bytes. Reports the first offending byte with its position.
bool checkSourceText(llvm::StringRef buffer, Diagnostics &diags);

} // namespace kiln

#endif
