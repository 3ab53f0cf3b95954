//===- Diagnostics.h - source-located errors for the frontend ---*- C++ -*-===//
#ifndef KILN_FRONTEND_DIAGNOSTICS_H
#define KILN_FRONTEND_DIAGNOSTICS_H

#include "llvm/ADT/Twine.h"
#include "llvm/Support/SMLoc.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

namespace kiln {

/// Prints `file:line:col: error: message` with the source line and a caret,
/// the way clang and MLIR do, and counts errors.
class Diagnostics {
public:
  explicit Diagnostics(llvm::SourceMgr &sm) : sm(sm) {}

  /// An invalid `loc` means the error has no place in the source (a -D
  /// override, a checkpoint header): it prints as `kiln: error: ...`.
  void error(llvm::SMLoc loc, const llvm::Twine &msg) {
    ++numErrors;
    if (loc.isValid()) {
      sm.PrintMessage(loc, llvm::SourceMgr::DK_Error, msg);
      return;
    }
    llvm::SMDiagnostic d("kiln", llvm::SourceMgr::DK_Error, msg.str());
    if (auto handler = sm.getDiagHandler())
      handler(d, sm.getDiagContext());
    else
      d.print(nullptr, llvm::errs());
  }
  void note(llvm::SMLoc loc, const llvm::Twine &msg) {
    sm.PrintMessage(loc, llvm::SourceMgr::DK_Note, msg);
  }
  unsigned errors() const { return numErrors; }
  llvm::SourceMgr &sourceMgr() { return sm; }

private:
  llvm::SourceMgr &sm;
  unsigned numErrors = 0;
};

} // namespace kiln

#endif
