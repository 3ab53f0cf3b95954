//===- MLIRGenTest.cpp - elaboration of models to kiln IR -----------------===//
#include "TestSource.h"
#include "frontend/Driver.h"
#include "ir/KilnOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include <gtest/gtest.h>

using namespace kiln;

namespace {

struct Compiled {
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::string errors;
};

Compiled compile(mlir::MLIRContext &ctx, llvm::StringRef src,
                 CompileOptions options = {}) {
  test::TestSource source(src, "g.kiln");
  Compiled out;
  out.module = compileBuffer(ctx, source.sm, source.id, options);
  out.errors = source.output;
  return out;
}

class MLIRGen : public ::testing::Test {
protected:
  MLIRGen() {
    ctx.getOrLoadDialect<KilnDialect>();
    ctx.getOrLoadDialect<mlir::func::FuncDialect>();
  }
  mlir::MLIRContext ctx;
};

constexpr const char *kTiny = R"(
model tiny(V = 16, C = 8, L = 2) {
  dim B, T
  param emb = embedding(V, C)
  block h[L] {
    param fc = linear(C, C)
    fn apply(x: f32[B, T, C]) -> f32[B, T, C] { return x + relu(fc(x)) }
  }
  fn forward(tok: i32[B, T]) -> f32[B, T, V] {
    return h.apply(emb(tok)) @ transpose(emb.weight)
  }
})";

TEST_F(MLIRGen, ParametersFollowBlockStructure) {
  Compiled c = compile(ctx, kTiny);
  ASSERT_TRUE(c.module) << c.errors;
  std::vector<std::string> names;
  for (ParameterOp p : c.module->getOps<ParameterOp>())
    names.push_back(p.getSymName().str());
  std::vector<std::string> want = {"emb.weight", "h.0.fc.weight", "h.0.fc.bias",
                                   "h.1.fc.weight", "h.1.fc.bias"};
  EXPECT_EQ(names, want);
}

TEST_F(MLIRGen, DefinesOverrideHyperparameters) {
  CompileOptions opts;
  opts.defines = {{"L", "5", ""}, {"V", "32", ""}};
  Compiled c = compile(ctx, kTiny, opts);
  ASSERT_TRUE(c.module) << c.errors;
  int count = 0;
  for (ParameterOp p : c.module->getOps<ParameterOp>()) {
    (void)p;
    ++count;
  }
  EXPECT_EQ(count, 1 + 2 * 5);
  auto fn = c.module->lookupSymbol<mlir::func::FuncOp>("forward");
  ASSERT_TRUE(fn);
  auto result = llvm::cast<mlir::RankedTensorType>(fn.getResultTypes()[0]);
  EXPECT_EQ(result.getDimSize(2), 32);
  EXPECT_TRUE(result.isDynamicDim(0));
}

TEST_F(MLIRGen, BadDefinesAreReported) {
  CompileOptions unknown;
  unknown.defines = {{"layers", "3", ""}};
  Compiled a = compile(ctx, kTiny, unknown);
  EXPECT_FALSE(a.module);
  EXPECT_NE(a.errors.find("has no hyperparameter 'layers'; it has: V, C, L"),
            std::string::npos)
      << a.errors;
  CompileOptions wrongKind;
  wrongKind.defines = {{"L", "2.5", ""}};
  Compiled b = compile(ctx, kTiny, wrongKind);
  EXPECT_FALSE(b.module);
  EXPECT_NE(b.errors.find("is an integer (default 2); give an integer"),
            std::string::npos)
      << b.errors;
}

TEST_F(MLIRGen, EveryOpCarriesAFileLocation) {
  Compiled c = compile(ctx, kTiny);
  ASSERT_TRUE(c.module) << c.errors;
  int ops = 0;
  c.module->walk([&](mlir::Operation *op) {
    if (llvm::isa<mlir::ModuleOp>(op))
      return;
    ++ops;
    bool found = false;
    op->getLoc()->walk([&](mlir::Location l) {
      if (auto f = llvm::dyn_cast<mlir::FileLineColLoc>(l))
        found |= f.getFilename() == "g.kiln" && f.getLine() > 0;
      return mlir::WalkResult::advance();
    });
    EXPECT_TRUE(found) << "no source location on "
                       << op->getName().getStringRef().str();
  });
  EXPECT_GT(ops, 10);
}

TEST_F(MLIRGen, SymbolicDimensionsAreChecked) {
  Compiled c = compile(ctx, R"(
model m() {
  dim B, T
  fn f(x: f32[B, T, 4], y: f32[T, B, 4]) -> f32[B, T, 4] { return x + y }
})");
  EXPECT_FALSE(c.module);
  EXPECT_NE(c.errors.find("do not broadcast for '+': dimension -2 is T vs B"),
            std::string::npos)
      << c.errors;
  EXPECT_NE(c.errors.find("g.kiln:4:69"), std::string::npos) << c.errors;
}

TEST_F(MLIRGen, FunctionsBindDimensionsPerCall) {
  // `g` is written over T but called with S: its dimensions bind at the call.
  Compiled c = compile(ctx, R"(
model m() {
  dim B, S, T
  fn g(x: f32[B, T, 4]) -> f32[B, T, 2] { a, b = split(x, 2); return a * b }
  fn f(x: f32[B, S, 4]) -> f32[B, S, 2] { return g(x) }
})");
  ASSERT_TRUE(c.module) << c.errors;
}

} // namespace
