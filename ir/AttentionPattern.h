//===- AttentionPattern.h - patterns written on a command line -*- C++ -*-===//
//
// The command-line spelling of an attention pattern (kiln compile and kiln
// train --attention=..., kiln.compile(attention=...), the
// kiln-sparsify-attention pass option): the kind, then a colon and its
// parameters, positional or named, separated by commas:
//
//   sliding_window:512
//   sliding_window:512,global_tokens=2
//   block_sparse:block=64,local=1,global=1,random=3,seed=0
//   strided:128
//   fixed:stride=128,summary=8
//   dense
//
// The kinds and parameters are those of runtime/attention/PatternSpec.h,
// the same as the language's `pattern = sliding_window(512)`.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_IR_ATTENTIONPATTERN_H
#define KILN_IR_ATTENTIONPATTERN_H

#include "runtime/attention/PatternSpec.h"

#include "mlir/IR/Location.h"
#include "llvm/ADT/StringRef.h"

#include <string>

namespace kiln {

/// Reads `text`; on failure returns false with a message that names the
/// offending part.
bool parsePatternText(llvm::StringRef text,
                      runtime::attention::PatternSpec &out, std::string &error);

/// Whether an op inlined from block instance `instance` ("h.3"; empty when
/// it is in no block) is selected by `selector`: "h" (every layer of block
/// h), "h.3" (one layer) or "h.2-5" (layers 2 to 5). Returns false with a
/// message in `error` when the selector is malformed.
bool blockSelected(llvm::StringRef selector, llvm::StringRef instance,
                   std::string &error);

} // namespace kiln

#endif
