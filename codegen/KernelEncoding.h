//===- KernelEncoding.h - one kiln op as a runtime kernel -------*- C++ -*-===//
//
// Internal to codegen: maps a kiln op to its runtime op and attribute table
// (runtime/schema/kart.fbs) and checks the result against the runtime's op
// table, so an artifact this writer emits is one the loader accepts.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_CODEGEN_KERNELENCODING_H
#define KILN_CODEGEN_KERNELENCODING_H

#include "runtime/kart_generated.h"

#include "mlir/IR/Operation.h"
#include "llvm/ADT/STLFunctionalExtras.h"

#include <vector>

namespace kiln {

/// Writes a dimension expression (an integer or "B*T") as a kart::Dim.
using DimEncoder =
    llvm::function_ref<mlir::FailureOr<flatbuffers::Offset<kart::Dim>>(
        mlir::Attribute, mlir::Location)>;

struct EncodedKernel {
  kart::Op op = kart::Op::Embedding;
  kart::Attrs attrsType = kart::Attrs::NONE;
  flatbuffers::Offset<void> attrs;
  /// Operand value ids in the runtime's order, -1 for an absent optional
  /// operand.
  std::vector<int> inputs;
};

/// Encodes `op`, whose operands have the value ids `idOf` gives. Reports at
/// the op's location what the CPU backend cannot lower.
mlir::FailureOr<EncodedKernel>
encodeKernel(mlir::Operation *op, flatbuffers::FlatBufferBuilder &fbb,
             DimEncoder dim, llvm::function_ref<int(mlir::Value)> idOf);

} // namespace kiln

#endif
