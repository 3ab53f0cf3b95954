//===- TestSource.h - in-memory sources with captured diagnostics -*- C++
//-*-===//
#ifndef KILN_TEST_UNIT_TESTSOURCE_H
#define KILN_TEST_UNIT_TESTSOURCE_H

#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <string>

namespace kiln::test {

/// A SourceMgr holding one in-memory file whose diagnostics are appended to
/// `output` instead of printed, so tests can check their text.
struct TestSource {
  llvm::SourceMgr sm;
  unsigned id;
  std::string output;
  llvm::raw_string_ostream os{output};

  TestSource(llvm::StringRef text, llvm::StringRef name) {
    id = sm.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(text, name),
                               llvm::SMLoc());
    sm.setDiagHandler(
        [](const llvm::SMDiagnostic &d, void *ctx) {
          d.print(nullptr, *static_cast<llvm::raw_string_ostream *>(ctx));
        },
        &os);
  }
  llvm::StringRef buffer() const { return sm.getMemoryBuffer(id)->getBuffer(); }
};

} // namespace kiln::test

#endif
