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
};

/// Checks the model and builds a kiln-dialect module. Reports errors (with
/// source locations) through `diags` and returns null on failure. The module
/// is not yet verified.
mlir::OwningOpRef<mlir::ModuleOp>
mlirGen(mlir::MLIRContext &ctx, const ast::Model &model, Diagnostics &diags,
        llvm::StringRef filename, const CompileOptions &options);

} // namespace kiln

#endif
