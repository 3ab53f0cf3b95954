//===- Driver.h - from a .kiln file to verified kiln IR ---------*- C++ -*-===//
//
// The one path from source to IR that the CLI, tests and (later) Python share.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_FRONTEND_DRIVER_H
#define KILN_FRONTEND_DRIVER_H

#include "frontend/AST.h"
#include "frontend/MLIRGen.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/SourceMgr.h"

#include <optional>
#include <string>

namespace kiln {

/// Reads a model file into the source manager. Reports unreadable, empty and
/// oversized files. Returns the buffer id, or 0 on failure.
unsigned loadSourceFile(llvm::StringRef path, llvm::SourceMgr &sm);

/// Parses the buffer `id` of `sm`.
std::optional<ast::Model> parseBuffer(llvm::SourceMgr &sm, unsigned id);

/// Parses, elaborates and verifies the buffer, then runs the frontend
/// pipeline. Errors print as `file:line:col: error: ...` with the source line;
/// returns null on any error.
mlir::OwningOpRef<mlir::ModuleOp> compileBuffer(mlir::MLIRContext &ctx,
                                                llvm::SourceMgr &sm,
                                                unsigned id,
                                                const CompileOptions &options);

/// Writes a table of the module's parameters (name, shape, dtype, count,
/// initializer) and the total count.
void printParameterSummary(mlir::ModuleOp module, llvm::raw_ostream &os);

/// Largest model file kiln reads (a model description, not weights).
constexpr uint64_t kMaxSourceBytes = 16u << 20;

} // namespace kiln

#endif
