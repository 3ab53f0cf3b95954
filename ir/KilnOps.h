//===- KilnOps.h - kiln dialect operations ----------------------*- C++ -*-===//
#ifndef KILN_IR_KILNOPS_H
#define KILN_IR_KILNOPS_H

#include "ir/KilnDialect.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/DialectImplementation.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "runtime/attention/PatternSpec.h"
#include "llvm/ADT/Hashing.h"

namespace kiln::runtime::attention {
/// For the dialect's attribute storage (#kiln.pattern).
inline llvm::hash_code hash_value(const PatternSpec &s) {
  return llvm::hash_combine(static_cast<int>(s.kind), s.causal, s.window,
                            s.block, s.local, s.globalBlocks, s.random, s.seed,
                            s.stride, s.summary, s.globalTokens);
}
} // namespace kiln::runtime::attention

#include "ir/KilnEnums.h.inc"
#define GET_ATTRDEF_CLASSES
#include "ir/KilnAttrs.h.inc"

#include "ir/KilnInterfaces.h.inc"

#define GET_OP_CLASSES
#include "ir/KilnOps.h.inc"

#endif
