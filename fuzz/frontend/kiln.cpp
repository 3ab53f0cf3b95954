//===- kiln.cpp - fuzz the .kiln frontend through IR verification ---------===//
//
// A model source, as `kiln compile` reads it: lexed, parsed, elaborated
// into the kiln dialect and verified (elaborateBuffer); a module that
// verifies then goes through the frontend's passes (shape inference,
// canonicalization) as compileBuffer does. Errors are collected the way the
// Python bindings collect them, each with its place.
#include "frontend/Driver.h"
#include "fuzz/Harness.h"
#include "ir/KilnOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/MemoryBuffer.h"

#include <memory>

namespace {

/// One context for many inputs (loading the dialects costs more than most
/// inputs), renewed now and then: it keeps every type and attribute it
/// has made.
mlir::MLIRContext &context() {
  static std::unique_ptr<mlir::MLIRContext> ctx;
  static unsigned uses = 0;
  if (!ctx || ++uses % 2000 == 0) {
    ctx = std::make_unique<mlir::MLIRContext>(
        mlir::MLIRContext::Threading::DISABLED);
    ctx->getOrLoadDialect<kiln::KilnDialect>();
    ctx->getOrLoadDialect<mlir::func::FuncDialect>();
  }
  return *ctx;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > kiln::kMaxSourceBytes) // loadSourceFile's own bound
    return 0;
  mlir::MLIRContext &ctx = context();
  // A few lines may declare a model of thousands of ops (a repeated block):
  // the frontend bounds the ops it unrolls (kMaxGeneratedOps), not bytes.
  kiln::fuzz::AllocationBound bound(size, 4096, size_t(512) << 20);
  llvm::SourceMgr sm;
  unsigned id = sm.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(
          llvm::StringRef(reinterpret_cast<const char *>(data), size),
          "fuzz.kiln"),
      llvm::SMLoc());
  kiln::DiagnosticCapture capture(sm, ctx);
  kiln::CompileOptions options;
  options.maxParameterBytes = uint64_t(1) << 30;
  options.parameterLimit = "the fuzz harness's 1 GiB";
  mlir::OwningOpRef<mlir::ModuleOp> module =
      kiln::elaborateBuffer(ctx, sm, id, options);
  if (!module)
    return 0;
  mlir::PassManager pm(&ctx);
  kiln::buildFrontendPipeline(pm);
  (void)pm.run(*module);
  return 0;
}
