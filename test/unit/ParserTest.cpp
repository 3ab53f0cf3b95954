//===- ParserTest.cpp - the .kiln parser ----------------------------------===//
#include "frontend/Parser.h"
#include "TestSource.h"

#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>
#include <string>

using namespace kiln;

namespace {

struct Parsed {
  std::optional<ast::Model> model;
  std::string errors;
  std::string ast;
};

Parsed parse(llvm::StringRef text) {
  test::TestSource src(text, "m.kiln");
  Parsed out;
  Diagnostics diags(src.sm);
  out.model = parseModel(src.buffer(), diags);
  out.errors = src.output;
  if (out.model) {
    llvm::raw_string_ostream as(out.ast);
    ast::print(*out.model, as);
  }
  return out;
}

TEST(Parser, ModelStructure) {
  Parsed p = parse(R"(
model m(n = 4, eps = 1e-5) {
  dim B, T
  param w: f32[n, 2 * n] = normal(0.02)
  param ln = layernorm(n, eps = eps)
  block h[3] {
    param fc = linear(n, n)
    fn apply(x: f32[B, T, n]) -> f32[B, T, n] { return fc(x) }
  }
  fn forward(x: f32[B, T, n]) -> (f32[B, T, n], f32) {
    a, b = split(x, 2, axis = -1); y = h.apply(x)
    return y, sum(y, axis = [0, 1, 2])
  }
})");
  ASSERT_TRUE(p.model) << p.errors;
  const ast::Model &m = *p.model;
  EXPECT_EQ(m.name, "m");
  ASSERT_EQ(m.hparams.size(), 2u);
  EXPECT_EQ(m.dims.size(), 2u);
  ASSERT_EQ(m.params.size(), 2u);
  EXPECT_TRUE(m.params[0].hasType);
  EXPECT_EQ(m.params[0].type.dims.size(), 2u);
  EXPECT_FALSE(m.params[1].hasType);
  ASSERT_EQ(m.blocks.size(), 1u);
  EXPECT_EQ(m.blocks[0].params.size(), 1u);
  EXPECT_EQ(m.blocks[0].fns.size(), 1u);
  ASSERT_EQ(m.fns.size(), 1u);
  EXPECT_EQ(m.fns[0].results.size(), 2u);
  ASSERT_EQ(m.fns[0].body.size(), 3u);
  EXPECT_EQ(m.fns[0].body[0].targets.size(), 2u);
  EXPECT_EQ(m.fns[0].body[2].kind, ast::Stmt::Return);
}

TEST(Parser, Precedence) {
  Parsed p = parse(
      "model m() { fn f(x: f32) -> f32 { return -a + b * c @ d ** -e ** 2 } }");
  ASSERT_TRUE(p.model) << p.errors;
  // '**' binds tighter than unary minus and is right-associative; '*' and '@'
  // share a level and associate left; '+' is lowest.
  EXPECT_NE(p.ast.find("(+ (- a) (@ (* b c) (** d (- (** e 2)))))"),
            std::string::npos)
      << p.ast;
}

TEST(Parser, SubscriptsAndMembers) {
  Parsed p = parse(
      "model m() { fn f(x: f32) -> f32 { return w.weight[0:T, :, 3][ids] } }");
  ASSERT_TRUE(p.model) << p.errors;
  EXPECT_NE(
      p.ast.find("(index (index (. w weight) (range 0 T) (range _ _) 3) ids)"),
      std::string::npos)
      << p.ast;
}

TEST(Parser, KeywordPathComponents) {
  Parsed p = parse("model m() { param model.block.fn = linear(2, 2)\n"
                   "block model.layers[2] { }\n"
                   "fn f(x: f32) -> f32 { return model.layers.apply(x) } }");
  ASSERT_TRUE(p.model) << p.errors;
  EXPECT_EQ(p.model->params[0].path, "model.block.fn");
  EXPECT_EQ(p.model->blocks[0].name, "model.layers");
}

struct BadCase {
  const char *source;
  const char *message;
};

// Names the case by its expected message in test listings.
void PrintTo(const BadCase &c, std::ostream *os) { *os << c.message; }

class ParserErrors : public ::testing::TestWithParam<BadCase> {};

TEST_P(ParserErrors, ReportsLocatedError) {
  Parsed p = parse(GetParam().source);
  EXPECT_FALSE(p.model);
  EXPECT_NE(p.errors.find(GetParam().message), std::string::npos)
      << "got: " << p.errors;
  EXPECT_NE(p.errors.find("m.kiln:"), std::string::npos) << p.errors;
}

INSTANTIATE_TEST_SUITE_P(
    Syntax, ParserErrors,
    ::testing::Values(
        BadCase{"", "declares no model"},
        BadCase{"   # only a comment\n", "declares no model"},
        BadCase{"modle m() {}", "expected 'model' at the start of the file"},
        BadCase{"model () {}", "expected the model's name"},
        BadCase{"model m {}", "expected '(' after the model name"},
        BadCase{"model m(n) {}", "every hyperparameter has a default"},
        BadCase{"model m() { dim }", "expected a dimension name"},
        BadCase{"model m() { param w f32[2] = zeros() }",
                "or ':' after the parameter name"},
        BadCase{"model m() { param w: f32[2] = 3 }",
                "expected an initializer call"},
        BadCase{"model m() { param w = 3 }", "expected a module constructor"},
        BadCase{"model m() { block h { } }", "and the repeat count"},
        BadCase{"model m() { fn f(x) -> f32 { return x } }",
                "and the argument's type"},
        BadCase{"model m() { fn f(x: f32) { return x } }",
                "and the result type"},
        BadCase{"model m() { fn f(x: f32) -> f32 { return x + } }",
                "expected an expression"},
        BadCase{"model m() { fn f(x: f32) -> f32 { return g(a = 1, x) } }",
                "positional argument after a keyword argument"},
        BadCase{"model m() { fn f(x: f32) -> f32 { return g(a = 1, a = 2) } }",
                "argument 'a' is given twice"},
        BadCase{"model m() { fn f(x: f32) -> f32 { return (x } }",
                "expected ')' to close the parenthesis"},
        BadCase{"model m() { fn f(x: f32) -> f32 { 3 = x } }",
                "expected a statement"},
        BadCase{"model m() { x = 1 }",
                "expected 'dim', 'param', 'block', 'fn' or '}'"},
        BadCase{"model m() { } model n() { }",
                "expected end of file after the model"},
        BadCase{"model m() { fn f(x: f32) -> f32 {", "found end of file"}),
    [](const ::testing::TestParamInfo<BadCase> &info) {
      return "Case" + std::to_string(info.index);
    });

TEST(Parser, DeepNestingIsAnErrorNotACrash) {
  std::string src = "model m() { fn f(x: f32) -> f32 { return " +
                    std::string(100000, '(') + "x" + std::string(100000, ')') +
                    " } }";
  Parsed p = parse(src);
  EXPECT_FALSE(p.model);
  EXPECT_NE(p.errors.find("nested too deeply"), std::string::npos);
  std::string neg = "model m() { fn f(x: f32) -> f32 { return " +
                    std::string(100000, '-') + "x } }";
  Parsed q = parse(neg);
  EXPECT_FALSE(q.model);
  EXPECT_NE(q.errors.find("nested too deeply"), std::string::npos);
}

} // namespace
