//===- InferShapes.cpp - refine result types from operands ----------------===//
#include "ir/KilnOps.h"
#include "passes/Passes.h"

#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "kiln-infer-shapes"

namespace kiln {
#define GEN_PASS_DEF_INFERSHAPES
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;

namespace {

/// True when `refined` carries a static size wherever `current` does and at
/// least one more, with the same rank and element type.
bool isMoreStatic(Type refined, Type current) {
  auto r = llvm::dyn_cast<RankedTensorType>(refined);
  auto c = llvm::dyn_cast<RankedTensorType>(current);
  if (!r || !c || r.getRank() != c.getRank() ||
      r.getElementType() != c.getElementType())
    return false;
  bool gained = false;
  for (auto [dr, dc] : llvm::zip(r.getShape(), c.getShape())) {
    if (ShapedType::isDynamic(dr) && !ShapedType::isDynamic(dc))
      return false;
    if (!ShapedType::isDynamic(dr) && !ShapedType::isDynamic(dc) && dr != dc)
      return false;
    gained |= !ShapedType::isDynamic(dr) && ShapedType::isDynamic(dc);
  }
  return gained;
}

struct InferShapesPass : kiln::impl::InferShapesBase<InferShapesPass> {
  void runOnOperation() override {
    func::FuncOp fn = getOperation();
    unsigned refined = 0;
    WalkResult walk = fn.walk([&](InferTypeOpInterface op) -> WalkResult {
      SmallVector<Type> inferred;
      Operation *o = op.getOperation();
      if (failed(op.inferReturnTypes(o->getContext(), o->getLoc(),
                                     o->getOperands(), o->getAttrDictionary(),
                                     o->getPropertiesStorage(), o->getRegions(),
                                     inferred)))
        return WalkResult::interrupt();
      for (auto [result, type] : llvm::zip(o->getResults(), inferred)) {
        if (isMoreStatic(type, result.getType())) {
          LLVM_DEBUG(llvm::dbgs()
                     << "refining " << o->getName() << ": " << result.getType()
                     << " -> " << type << "\n");
          result.setType(type);
          ++refined;
        }
      }
      return WalkResult::advance();
    });
    if (walk.wasInterrupted())
      return signalPassFailure();
    if (fn.isExternal())
      return;
    // Keep the signature in step with what the function now returns.
    auto ret = llvm::cast<func::ReturnOp>(fn.getBody().back().getTerminator());
    FunctionType type = fn.getFunctionType();
    SmallVector<Type> results(ret.getOperandTypes());
    if (TypeRange(results) != type.getResults())
      fn.setType(FunctionType::get(fn.getContext(), type.getInputs(), results));
    LLVM_DEBUG(llvm::dbgs()
               << fn.getName() << ": refined " << refined << " result types\n");
  }
};

} // namespace
