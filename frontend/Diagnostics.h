//===- Diagnostics.h - source-located errors for the frontend ---*- C++ -*-===//
#ifndef KILN_FRONTEND_DIAGNOSTICS_H
#define KILN_FRONTEND_DIAGNOSTICS_H

#include "runtime/Tensor.h"

#include "llvm/ADT/Twine.h"
#include "llvm/Support/SMLoc.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <string>

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
      emit(clipped(sm.GetMessage(loc, llvm::SourceMgr::DK_Error, msg)));
      return;
    }
    emit(llvm::SMDiagnostic("kiln", llvm::SourceMgr::DK_Error, msg.str()));
  }
  void note(llvm::SMLoc loc, const llvm::Twine &msg) {
    emit(clipped(sm.GetMessage(loc, llvm::SourceMgr::DK_Note, msg)));
  }
  unsigned errors() const { return numErrors; }
  llvm::SourceMgr &sourceMgr() { return sm; }

private:
  /// The longest source line shown under a message: a longer one (a file of
  /// one 10 MB line, say) is cut to a window around the caret.
  static constexpr int kMaxShownLine = 160;

  llvm::SMDiagnostic clipped(const llvm::SMDiagnostic &d) {
    llvm::StringRef line = d.getLineContents();
    int col = d.getColumnNo();
    if (static_cast<int>(line.size()) <= kMaxShownLine || col < 0)
      return d;
    int start = std::max(0, col - kMaxShownLine / 2);
    std::string shown = (start > 0 ? "..." : "") +
                        line.substr(start, kMaxShownLine).str() + "...";
    int shownCol = col - start + (start > 0 ? 3 : 0);
    return llvm::SMDiagnostic(sm, d.getLoc(), d.getFilename(), d.getLineNo(),
                              shownCol, d.getKind(), d.getMessage(), shown,
                              {});
  }
  void emit(const llvm::SMDiagnostic &d) {
    if (auto handler = sm.getDiagHandler()) {
      handler(d, sm.getDiagContext()); // spells options itself (Python's)
      return;
    }
    // Printed here: options (runtime::optionRef) as the command line
    // spells them.
    std::string message = runtime::spellOptions(d.getMessage().str(), false);
    if (message == d.getMessage()) {
      d.print(nullptr, llvm::errs());
      return;
    }
    if (!d.getSourceMgr()) { // no place in the source
      llvm::SMDiagnostic(d.getFilename(), d.getKind(), message)
          .print(nullptr, llvm::errs());
      return;
    }
    llvm::SMDiagnostic(*d.getSourceMgr(), d.getLoc(), d.getFilename(),
                       d.getLineNo(), d.getColumnNo(), d.getKind(), message,
                       d.getLineContents(), d.getRanges())
        .print(nullptr, llvm::errs());
  }

  llvm::SourceMgr &sm;
  unsigned numErrors = 0;
};

} // namespace kiln

#endif
