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
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/SourceMgr.h"

#include <optional>
#include <string>
#include <vector>

namespace kiln {

/// Reads a model file into the source manager. Reports unreadable, empty and
/// oversized files. Returns the buffer id, or 0 on failure.
unsigned loadSourceFile(llvm::StringRef path, llvm::SourceMgr &sm);

/// Parses the buffer `id` of `sm`.
std::optional<ast::Model> parseBuffer(llvm::SourceMgr &sm, unsigned id);

/// Parses, elaborates and verifies the buffer: the module as the frontend
/// builds it, before any pass. Errors print as `file:line:col: error: ...`
/// with the source line, unless the caller collects them; returns null on
/// any error.
mlir::OwningOpRef<mlir::ModuleOp>
elaborateBuffer(mlir::MLIRContext &ctx, llvm::SourceMgr &sm, unsigned id,
                const CompileOptions &options);

/// Parses, elaborates and verifies the buffer, then runs the frontend
/// pipeline. Errors print as `file:line:col: error: ...` with the source line;
/// returns null on any error.
mlir::OwningOpRef<mlir::ModuleOp> compileBuffer(mlir::MLIRContext &ctx,
                                                llvm::SourceMgr &sm,
                                                unsigned id,
                                                const CompileOptions &options);

/// Bounds `options.maxParameterBytes` by this machine's memory and, when
/// the weights are to be embedded in an artifact, by what one holds.
void limitParameters(CompileOptions &options, bool embedded);

/// One error, with its place in the source when it has one.
struct CapturedDiagnostic {
  std::string file;
  unsigned line = 0, column = 0; // 1-based; 0 when there is no place
  std::string message;
  /// `file:line:col: error: message`.
  std::string str() const;
};

/// Collects errors instead of printing them, for callers that report them
/// their own way (the Python bindings): frontend errors through the source
/// manager and IR diagnostics (verifier, passes, lowering) through the
/// context, each with the file, line and column of the op's own source line.
class DiagnosticCapture {
public:
  DiagnosticCapture(llvm::SourceMgr &sm, mlir::MLIRContext &ctx);
  ~DiagnosticCapture();
  std::vector<CapturedDiagnostic> errors;

private:
  llvm::SourceMgr &sm;
  std::optional<mlir::ScopedDiagnosticHandler> handler;
};

/// Writes a table of the module's parameters (name, shape, dtype, count,
/// initializer) and the total count.
void printParameterSummary(mlir::ModuleOp module, llvm::raw_ostream &os);

/// Largest model file kiln reads (a model description, not weights).
constexpr uint64_t kMaxSourceBytes = 16u << 20;

} // namespace kiln

#endif
