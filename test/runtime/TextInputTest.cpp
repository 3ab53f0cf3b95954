//===- TextInputTest.cpp - JSON, Unicode tables, tokenizer parts ----------===//
//
// The pieces under the tokenizers that the end-to-end tests against the
// references (test/python/test_*tokenizer*.py) reach only indirectly: the
// JSON reader's errors and limits, the generated Unicode tables against
// values from the Unicode Character Database, strict UTF-8 decoding, and
// Tokenizer::fromParts refusing inconsistent parts.
//
//===----------------------------------------------------------------------===//
#include "runtime/Json.h"
#include "runtime/Tokenizer.h"
#include "runtime/tokenizer/Unicode.h"

#include <gtest/gtest.h>

using namespace kiln::runtime;
namespace uc = kiln::runtime::unicode;

namespace {

std::string jsonError(const std::string &text) {
  JsonValue v;
  Status s = parseJson(text, v, "t.json");
  EXPECT_FALSE(s) << text;
  return s.message();
}

TEST(Json, ReadsValues) {
  JsonValue v;
  ASSERT_TRUE(
      parseJson(R"( {"a": [1, -2.5e1, true, null], "b": "x\u00e9\ud83d\ude00\n",
                             "big": 12345678901234, "a": 3} )",
                v, "t.json"));
  ASSERT_TRUE(v.isObject());
  const JsonValue *a = v.get("a"); // the last of a repeated key
  ASSERT_TRUE(a && a->isInteger);
  EXPECT_EQ(a->integer, 3);
  const JsonValue &arr = v.members[0].second;
  ASSERT_EQ(arr.items.size(), 4u);
  EXPECT_EQ(arr.items[1].number, -25.0);
  EXPECT_FALSE(arr.items[1].isInteger);
  EXPECT_TRUE(arr.items[2].boolean);
  EXPECT_EQ(arr.items[3].kind, JsonValue::Kind::Null);
  EXPECT_EQ(v.get("b")->string, "x\xC3\xA9\xF0\x9F\x98\x80\n");
  EXPECT_EQ(v.get("big")->integer, 12345678901234);
  EXPECT_EQ(v.get("b")->offset, 37u);
}

TEST(Json, ErrorsNameTheOffset) {
  EXPECT_EQ(jsonError(R"({"a" 1})"), "t.json: expected ':' at byte offset 5");
  EXPECT_EQ(jsonError("[1, 2"), "t.json: expected ',' or ']' at byte "
                                "offset 5");
  EXPECT_EQ(jsonError("[1, "), "t.json: unexpected end of JSON at byte "
                               "offset 4");
  EXPECT_EQ(jsonError(R"(["\ud800x"])"),
            "t.json: unpaired surrogate in a \\u escape at byte offset 8");
  EXPECT_EQ(jsonError("[1] 2"),
            "t.json: unexpected text after the JSON value at byte offset 4");
  EXPECT_EQ(jsonError("\"a\x01\""),
            "t.json: control character in a string at byte offset 2");
  EXPECT_EQ(jsonError("\"\xff\""),
            "t.json: invalid UTF-8 in a string at byte offset 1");
  EXPECT_EQ(jsonError("[tru]"), "t.json: invalid JSON value at byte offset 1");
  EXPECT_EQ(jsonError("[1.]"), "t.json: invalid number at byte offset 3");
  std::string deep(1000, '[');
  EXPECT_NE(jsonError(deep).find("JSON nested deeper than 128"),
            std::string::npos);
}

TEST(Unicode, CategoriesMatchTheDatabase) {
  EXPECT_EQ(uc::category(U'A'), uc::Category::Lu);
  EXPECT_EQ(uc::category(U'\u00E9'), uc::Category::Ll);
  EXPECT_EQ(uc::category(U'\u4E2D'), uc::Category::Lo); // 中
  EXPECT_EQ(uc::category(U'\u0663'), uc::Category::Nd); // Arabic-Indic 3
  EXPECT_EQ(uc::category(U'\u00BD'), uc::Category::No); // ½
  EXPECT_EQ(uc::category(U'\u2164'), uc::Category::Nl); // Roman numeral 5
  EXPECT_EQ(uc::category(U'\u0301'), uc::Category::Mn);
  EXPECT_EQ(uc::category(U'\u2014'), uc::Category::Pd); // em dash
  EXPECT_EQ(uc::category(U'\U0001F600'), uc::Category::So);
  EXPECT_EQ(uc::category(U'\u3000'), uc::Category::Zs);
  EXPECT_EQ(uc::category(U'\u200B'), uc::Category::Cf);
  EXPECT_EQ(uc::category(U'\U0010FFFF'), uc::Category::Cn);
  EXPECT_EQ(uc::category(U'\uE000'), uc::Category::Co);
  EXPECT_TRUE(uc::isWhiteSpace(U'\u2028'));
  EXPECT_FALSE(uc::isWhiteSpace(U'\u200B'));
}

TEST(Unicode, LowerAndStrip) {
  std::u32string out;
  for (char32_t c : std::u32string(U"ÀÉÎ\u0130Ω"))
    uc::appendLower(c, out);
  EXPECT_EQ(out, U"àéîi\u0307ω"); // İ lowers to i + combining dot
  out.clear();
  for (char32_t c : std::u32string(U"àéñ\u0301ş\uD55C\u1E9B"))
    uc::appendStripped(c, out);
  // 한 decomposes to its jamo; ẛ (long s with dot) to ſ.
  EXPECT_EQ(out, U"aens\u1112\u1161\u11AB\u017F");
}

TEST(Unicode, StrictUtf8) {
  std::u32string cps;
  size_t bad = 99;
  EXPECT_TRUE(uc::decodeUtf8("a\xC3\xA9\xF0\x9F\x98\x80", cps, bad));
  EXPECT_EQ(cps, U"aé\U0001F600");
  EXPECT_EQ(uc::toUtf8(cps), "a\xC3\xA9\xF0\x9F\x98\x80");
  for (auto [text, at] : std::vector<std::pair<std::string, size_t>>{
           {"ab\xC0\xAF", 2},        // overlong '/'
           {"\xED\xA0\x80", 0},      // a surrogate
           {"x\xF4\x90\x80\x80", 1}, // past U+10FFFF
           {"xy\xE6\x97", 2},        // truncated
           {"\x80", 0}}) {           // a lone continuation byte
    EXPECT_FALSE(uc::decodeUtf8(text, cps, bad)) << text;
    EXPECT_EQ(bad, at) << text;
  }
}

std::string partsError(TokenizerParts p) {
  Tokenizer t;
  Status s = Tokenizer::fromParts(std::move(p), t);
  EXPECT_FALSE(s);
  return s.message();
}

TEST(TokenizerParts, InconsistentPartsAreRefused) {
  TokenizerParts p;
  p.kind = "morse";
  p.pieces = {"a"};
  EXPECT_EQ(partsError(p), "unknown tokenizer kind 'morse'; expected one of "
                           "char, byte, llama2c, gpt2, wordpiece, "
                           "sentencepiece");
  p.kind = "char";
  p.special = {3};
  EXPECT_EQ(partsError(p), "special token id 3 is not an id of the 1-token "
                           "vocabulary");
  p.special.clear();
  p.merges = {"a b"};
  EXPECT_NE(partsError(p).find("a char tokenizer has only pieces"),
            std::string::npos);
  p.kind = "gpt2";
  EXPECT_EQ(partsError(p), "the vocabulary lacks the symbol of byte 0 "
                           "('\xC4\x80'); is this GPT-2's byte-level BPE?");
  p.kind = "wordpiece";
  p.merges.clear();
  EXPECT_EQ(partsError(p), "the wordpiece vocabulary has no [UNK] token");
  p.pieces = {"[UNK]", "a"};
  p.eos = 5;
  EXPECT_EQ(partsError(p), "BOS/EOS id 5 is not an id of the 2-token "
                           "vocabulary");
  p.kind = "sentencepiece";
  p.eos = -1;
  p.model = "not a model";
  EXPECT_NE(partsError(p).find("the SentencePiece model cannot be read"),
            std::string::npos);
}

TEST(TokenizerParts, CopiesShareOneCodec) {
  TokenizerParts p;
  p.kind = "wordpiece";
  p.pieces = {"[UNK]", "[CLS]", "[SEP]", "un", "##able", "!"};
  p.bos = 1;
  p.eos = 2;
  p.lowercase = true;
  Tokenizer a;
  ASSERT_TRUE(Tokenizer::fromParts(p, a));
  Tokenizer b = a;
  a = Tokenizer(); // the copy keeps the parts and codec alive
  std::vector<int32_t> ids;
  ASSERT_TRUE(b.encode("UNABLE! xyz", ids));
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 3, 4, 5, 0, 2}));
  EXPECT_EQ(b.decode(ids), "[CLS] unable ! [UNK] [SEP]");
}

} // namespace
