//===- FuseCrossEntropy.cpp - loss and gradient in one kernel -------------===//
//
// The fused op goes where the gradient was (its upstream operand is defined
// by then), so the loss must have no user between the two.
//
//===----------------------------------------------------------------------===//
#include "ir/KilnOps.h"
#include "passes/Passes.h"

#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "kiln-fuse-cross-entropy"

namespace kiln {
#define GEN_PASS_DEF_FUSECROSSENTROPY
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

void fuse(CrossEntropyGradOp grad) {
  CrossEntropyOp loss;
  for (Operation *user : grad.getLogits().getUsers())
    if (auto ce = llvm::dyn_cast<CrossEntropyOp>(user))
      if (ce.getTargets() == grad.getTargets() &&
          ce.getIgnoreIndex() == grad.getIgnoreIndex() &&
          ce->getBlock() == grad->getBlock() && ce->isBeforeInBlock(grad))
        loss = ce;
  if (!loss)
    return;
  for (Operation *user : loss.getResult().getUsers())
    if (user->getBlock() != grad->getBlock() || !grad->isBeforeInBlock(user))
      return;
  OpBuilder b(grad);
  auto fused = b.create<SoftmaxCrossEntropyOp>(
      FusedLoc::get(b.getContext(), {loss.getLoc(), grad.getLoc()}),
      TypeRange{loss.getType(), grad.getType()}, grad.getLogits(),
      grad.getTargets(), grad.getUpstream(), grad.getIgnoreIndex());
  LLVM_DEBUG(llvm::dbgs() << "fused " << fused << "\n");
  loss.getResult().replaceAllUsesWith(fused.getLoss());
  grad.getResult().replaceAllUsesWith(fused.getLogitsGrad());
  grad.erase();
  loss.erase();
}

struct FuseCrossEntropyPass
    : kiln::impl::FuseCrossEntropyBase<FuseCrossEntropyPass> {
  void runOnOperation() override {
    SmallVector<CrossEntropyGradOp> grads;
    getOperation().walk([&](CrossEntropyGradOp g) { grads.push_back(g); });
    for (CrossEntropyGradOp g : grads)
      fuse(g);
  }
};

} // namespace
