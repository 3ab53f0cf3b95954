//===- KartWriterTest.cpp - the artifact writer, read back by the runtime -===//
//
// What the writer records that no other test observes: a frozen parameter
// becomes trainable = false, dense f32 parameters carry no storage table,
// every kernel runs on the CPU from host memory, and a fused elementwise
// program holds nothing but its instructions.
//
//===----------------------------------------------------------------------===//
#include "codegen/KartWriter.h"
#include "ir/KilnOps.h"
#include "runtime/Model.h"
#include "runtime/kart_generated.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Parser/Parser.h"
#include <gtest/gtest.h>

using namespace kiln;

namespace {

constexpr const char *kModule = R"mlir(
module attributes {kiln.dims = ["B"]} {
  kiln.parameter @w : tensor<4xf32> {init = "ones"}
  kiln.parameter @b : tensor<4xf32> {frozen, init = "zeros"}
  func.func @forward(%x: tensor<?x4xf32> {kiln.dims = ["B", 4], kiln.name = "x"}) -> tensor<?x4xf32> {
    %w = kiln.param @w : tensor<4xf32>
    %b = kiln.param @b : tensor<4xf32>
    %y = kiln.fused_elementwise %x, %w, %b : tensor<?x4xf32>, tensor<4xf32>, tensor<4xf32> -> tensor<?x4xf32> {
    ^bb0(%a: tensor<f32>, %c: tensor<f32>, %d: tensor<f32>):
      %m = kiln.mul %a, %c : tensor<f32>, tensor<f32> -> tensor<f32>
      %g = kiln.gelu %m {approximate = #kiln<gelu tanh>} : tensor<f32>
      %s = kiln.add %g, %d : tensor<f32>, tensor<f32> -> tensor<f32>
      kiln.yield %s : tensor<f32>
    }
    return %y : tensor<?x4xf32>
  }
}
)mlir";

TEST(KartWriter, RecordsTrainabilityDevicesAndPrograms) {
  mlir::MLIRContext ctx;
  ctx.getOrLoadDialect<KilnDialect>();
  ctx.getOrLoadDialect<mlir::func::FuncDialect>();
  auto module = mlir::parseSourceString<mlir::ModuleOp>(kModule, &ctx);
  ASSERT_TRUE(module);
  std::vector<uint8_t> bytes;
  ASSERT_TRUE(mlir::succeeded(writeArtifact(*module, {}, bytes)));

  const kart::Program *p = kart::GetProgram(bytes.data());
  ASSERT_EQ(p->parameters()->size(), 2u);
  EXPECT_TRUE(p->parameters()->Get(0)->trainable());
  EXPECT_FALSE(p->parameters()->Get(1)->trainable());
  for (const kart::Parameter *pr : *p->parameters())
    EXPECT_EQ(pr->storage(), nullptr) << "dense f32 needs no storage table";
  EXPECT_EQ(p->executables(), nullptr);
  const kart::Function *fn = p->functions()->Get(0);
  for (const kart::Value *v : *fn->values())
    EXPECT_EQ(v->memory_space(), kart::MemorySpace::Host);
  ASSERT_EQ(fn->kernels()->size(), 1u);
  const kart::Kernel *k = fn->kernels()->Get(0);
  EXPECT_EQ(k->device(), kart::Device::CPU);
  EXPECT_EQ(k->executable(), -1);
  const kart::ElementwiseProgram *prog = k->attrs_as_ElementwiseProgram();
  ASSERT_NE(prog, nullptr);
  ASSERT_EQ(prog->code()->size(), 3u);
  const kart::Instruction *gelu = prog->code()->Get(1);
  EXPECT_EQ(gelu->op(), kart::Op::Gelu);
  EXPECT_EQ(gelu->variant(),
            static_cast<int8_t>(kart::GeluApproximation::Tanh));
  EXPECT_EQ(prog->result(), 5); // 3 inputs, then one register each

  // The runtime reads it back the same way.
  std::unique_ptr<runtime::Model> m;
  ASSERT_TRUE(runtime::Model::fromBytes(bytes, m, "."));
  EXPECT_TRUE(m->parameters()[0].trainable);
  EXPECT_FALSE(m->parameters()[1].trainable);
}

TEST(KartWriter, FusedProgramsCarryOnlyTheirInstructions) {
  // Encoding a fused body once wrote each instruction's attribute table
  // (unused) into the artifact; the body's attributes live in the
  // instructions alone, so the artifact must not grow with them.
  mlir::MLIRContext ctx;
  ctx.getOrLoadDialect<KilnDialect>();
  ctx.getOrLoadDialect<mlir::func::FuncDialect>();
  std::string one = kModule, many = kModule;
  std::string gelu =
      "      %g = kiln.gelu %m {approximate = #kiln<gelu tanh>} : "
      "tensor<f32>\n";
  std::string chain;
  for (int i = 0; i < 40; ++i)
    chain += "      %g" + std::to_string(i) + " = kiln.gelu " +
             (i ? "%g" + std::to_string(i - 1) : std::string("%m")) +
             " {approximate = #kiln<gelu tanh>} : tensor<f32>\n";
  chain += "      %g = kiln.neg %g39 : tensor<f32>\n";
  many.replace(many.find(gelu), gelu.size(), chain);
  std::vector<uint8_t> small, large;
  for (auto [src, out] : {std::pair{&one, &small}, std::pair{&many, &large}}) {
    auto module = mlir::parseSourceString<mlir::ModuleOp>(*src, &ctx);
    ASSERT_TRUE(module);
    ASSERT_TRUE(mlir::succeeded(writeArtifact(*module, {}, *out)));
  }
  // 40 more instructions of 12 bytes each, and nothing else per
  // instruction (a stray table would add at least 12 more bytes each).
  EXPECT_LE(large.size(), small.size() + 40 * 12 + 64);
}

} // namespace
