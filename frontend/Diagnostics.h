//===- Diagnostics.h - source-located errors for the frontend ---*- C++ -*-===//
#ifndef KILN_FRONTEND_DIAGNOSTICS_H
#define KILN_FRONTEND_DIAGNOSTICS_H

#include "llvm/ADT/Twine.h"
#include "llvm/Support/SMLoc.h"
#include "llvm/Support/SourceMgr.h"

namespace kiln {

/// Prints `file:line:col: error: message` with the source line and a caret,
/// the way clang and MLIR do, and counts errors.
class Diagnostics {
public:
  explicit Diagnostics(llvm::SourceMgr &sm) : sm(sm) {}

  void error(llvm::SMLoc loc, const llvm::Twine &msg) {
    ++numErrors;
    sm.PrintMessage(loc, llvm::SourceMgr::DK_Error, msg);
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
