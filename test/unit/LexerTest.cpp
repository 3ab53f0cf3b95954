//===- LexerTest.cpp - tokens of the kiln language ------------------------===//
#include "frontend/Lexer.h"
#include "TestSource.h"

#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>
#include <string>
#include <vector>

using namespace kiln;

namespace {

struct Lexed {
  std::vector<Token> tokens;
  unsigned errors = 0;
  std::string output;
};

Lexed lex(llvm::StringRef text) {
  test::TestSource src(text, "test.kiln");
  Lexed out;
  Diagnostics diags(src.sm);
  llvm::StringRef buffer = src.buffer();
  if (!checkSourceText(buffer, diags)) {
    out.errors = diags.errors();
    out.output = src.output;
    return out;
  }
  Lexer lexer(buffer, diags);
  for (;;) {
    Token t = lexer.next();
    out.tokens.push_back(t);
    if (t.kind == Tok::Eof || t.kind == Tok::Error)
      break;
  }
  out.errors = diags.errors();
  out.output = src.output;
  return out;
}

std::vector<Tok> kinds(const Lexed &l) {
  std::vector<Tok> k;
  for (const Token &t : l.tokens)
    k.push_back(t.kind);
  return k;
}

TEST(Lexer, PunctuationAndOperators) {
  Lexed l = lex("( ) [ ] { } , : ; . = -> + - * ** / @");
  EXPECT_EQ(l.errors, 0u);
  std::vector<Tok> want = {
      Tok::LParen,   Tok::RParen, Tok::LBracket, Tok::RBracket,  Tok::LBrace,
      Tok::RBrace,   Tok::Comma,  Tok::Colon,    Tok::Semicolon, Tok::Dot,
      Tok::Equal,    Tok::Arrow,  Tok::Plus,     Tok::Minus,     Tok::Star,
      Tok::StarStar, Tok::Slash,  Tok::At,       Tok::Eof};
  EXPECT_EQ(kinds(l), want);
}

TEST(Lexer, NumbersAndNames) {
  Lexed l = lex("768 1e-5 0.02 .5 3.0E2 n_embd _x model return true false");
  ASSERT_EQ(l.errors, 0u);
  ASSERT_EQ(l.tokens.size(), 12u);
  EXPECT_EQ(l.tokens[0].kind, Tok::Int);
  EXPECT_EQ(l.tokens[0].intValue, 768);
  EXPECT_EQ(l.tokens[1].kind, Tok::Float);
  EXPECT_DOUBLE_EQ(l.tokens[1].floatValue, 1e-5);
  EXPECT_DOUBLE_EQ(l.tokens[2].floatValue, 0.02);
  EXPECT_DOUBLE_EQ(l.tokens[3].floatValue, 0.5);
  EXPECT_DOUBLE_EQ(l.tokens[4].floatValue, 300.0);
  EXPECT_EQ(l.tokens[5].kind, Tok::Ident);
  EXPECT_EQ(l.tokens[5].text, "n_embd");
  EXPECT_EQ(l.tokens[6].kind, Tok::Ident);
  // `model` is contextual (usable in paths); `return`, `true`, `false` are
  // reserved.
  EXPECT_EQ(l.tokens[7].kind, Tok::Ident);
  EXPECT_EQ(l.tokens[8].kind, Tok::KwReturn);
  EXPECT_EQ(l.tokens[9].kind, Tok::KwTrue);
  EXPECT_EQ(l.tokens[10].kind, Tok::KwFalse);
}

TEST(Lexer, CommentsMayHoldUnicode) {
  Lexed l = lex("x # naïve comment — fine\ny");
  EXPECT_EQ(l.errors, 0u);
  EXPECT_EQ(kinds(l), (std::vector<Tok>{Tok::Ident, Tok::Ident, Tok::Eof}));
}

TEST(Lexer, IntegerTooLarge) {
  Lexed l = lex("99999999999999999999");
  EXPECT_EQ(l.errors, 1u);
  EXPECT_NE(l.output.find("too large"), std::string::npos) << l.output;
  EXPECT_NE(l.output.find("test.kiln:1:1"), std::string::npos) << l.output;
}

TEST(Lexer, FloatOutOfRange) {
  Lexed l = lex("1e999");
  EXPECT_EQ(l.errors, 1u);
  EXPECT_NE(l.output.find("too large for a float"), std::string::npos);
}

TEST(Lexer, MalformedExponent) {
  Lexed l = lex("1e+");
  EXPECT_EQ(l.errors, 1u);
  EXPECT_NE(l.output.find("malformed exponent"), std::string::npos);
}

TEST(Lexer, UnexpectedCharacterHasColumn) {
  Lexed l = lex("a\n  $b");
  EXPECT_EQ(l.errors, 1u);
  EXPECT_NE(l.output.find("test.kiln:2:3: error: unexpected character '$'"),
            std::string::npos)
      << l.output;
}

TEST(Lexer, RejectsNulAndInvalidUtf8) {
  Lexed nul = lex(llvm::StringRef("model\0x", 7));
  EXPECT_EQ(nul.errors, 1u);
  EXPECT_NE(nul.output.find("NUL byte"), std::string::npos);
  Lexed bad = lex("model \xff\xfe");
  EXPECT_EQ(bad.errors, 1u);
  EXPECT_NE(bad.output.find("invalid UTF-8 byte 0xFF at offset 6"),
            std::string::npos)
      << bad.output;
}

TEST(Lexer, NonAsciiOutsideComments) {
  Lexed l = lex("x = \xce\xbb");
  EXPECT_EQ(l.errors, 1u);
  EXPECT_NE(l.output.find("non-ASCII"), std::string::npos);
}

} // namespace
