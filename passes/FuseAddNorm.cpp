//===- FuseAddNorm.cpp - residual add + layernorm/rmsnorm -----------------===//
//
// The fused op takes the add's place, so every user of the sum (the
// residual stream) still sees it defined first; the norm's weight and bias,
// kiln.param ops without operands, move up to it when they come later.
//
//===----------------------------------------------------------------------===//
#include "ir/KilnOps.h"
#include "passes/Passes.h"

#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "kiln-fuse-add-norm"

namespace kiln {
#define GEN_PASS_DEF_FUSEADDNORM
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

/// Makes `v` available before `at`: true if it already is, or if its
/// defining op has no operands and could move there.
bool availableBefore(Value v, Operation *at) {
  Operation *def = v.getDefiningOp();
  if (!def || def->getBlock() != at->getBlock() || def->isBeforeInBlock(at))
    return true;
  if (def->getNumOperands() != 0 || !llvm::isa<ParamOp, ConstantOp>(def))
    return false;
  def->moveBefore(at);
  return true;
}

void fuse(Operation *norm, Value input, Value weight, Value bias, NormKind kind,
          double eps) {
  auto add = input.getDefiningOp<AddOp>();
  if (!add || add.getLhs().getType() != add.getType() ||
      add.getRhs().getType() != add.getType() ||
      !add.getType().getElementType().isF32())
    return;
  if (!availableBefore(weight, add) || (bias && !availableBefore(bias, add)))
    return;
  OpBuilder b(add);
  auto fused = b.create<AddNormOp>(
      FusedLoc::get(b.getContext(), {add.getLoc(), norm->getLoc()}),
      TypeRange{add.getType(), norm->getResult(0).getType()}, add.getLhs(),
      add.getRhs(), weight, bias, kind, llvm::APFloat(eps));
  LLVM_DEBUG(llvm::dbgs() << "fused " << fused << "\n");
  norm->getResult(0).replaceAllUsesWith(fused.getResult());
  add.getResult().replaceAllUsesWith(fused.getSum());
  norm->erase();
  add.erase();
}

struct FuseAddNormPass : kiln::impl::FuseAddNormBase<FuseAddNormPass> {
  void runOnOperation() override {
    SmallVector<Operation *> norms;
    getOperation().walk([&](Operation *op) {
      if (llvm::isa<LayerNormOp, RMSNormOp>(op))
        norms.push_back(op);
    });
    for (Operation *op : norms) {
      if (auto ln = llvm::dyn_cast<LayerNormOp>(op))
        fuse(op, ln.getInput(), ln.getWeight(), ln.getBias(),
             NormKind::LayerNorm, ln.getEps().convertToDouble());
      else if (auto rn = llvm::dyn_cast<RMSNormOp>(op))
        fuse(op, rn.getInput(), rn.getWeight(), Value(), NormKind::RMSNorm,
             rn.getEps().convertToDouble());
    }
  }
};

} // namespace
