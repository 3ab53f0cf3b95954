//===- MLIRGen.h - .kiln syntax tree to the kiln dialect --------*- C++ -*-===//
#ifndef KILN_FRONTEND_MLIRGEN_H
#define KILN_FRONTEND_MLIRGEN_H

#include "frontend/AST.h"
#include "frontend/Diagnostics.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"

#include <string>
#include <utility>
#include <vector>

namespace kiln {

struct Define {
  std::string name, value;
  /// Where the override comes from, for messages; empty means `-D`.
  std::string origin;
};

struct CompileOptions {
  /// Hyperparameter overrides, in command-line order.
  std::vector<Define> defines;
  /// The most bytes the parameters may take (0: no bound), and what sets
  /// it ("this machine's 23.4 GiB of memory"). Checked as parameters are
  /// declared, and for a repeated block before its copies are built, so a
  /// model too large to hold is refused before its IR is.
  uint64_t maxParameterBytes = 0;
  std::string parameterLimit;
};

/// The most operations the frontend unrolls a model into. The largest
/// published transformers unroll to a few thousand; a repeat count that
/// multiplies past this is a mistake, refused before it costs gigabytes.
constexpr int64_t kMaxGeneratedOps = 250000;

/// Checks the model and builds a kiln-dialect module. Reports errors (with
/// source locations) through `diags` and returns null on failure. The module
/// is not yet verified.
mlir::OwningOpRef<mlir::ModuleOp>
mlirGen(mlir::MLIRContext &ctx, const ast::Model &model, Diagnostics &diags,
        llvm::StringRef filename, const CompileOptions &options);

} // namespace kiln

#endif
