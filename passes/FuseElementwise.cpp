//===- FuseElementwise.cpp - elementwise chains as one tile program -------===//
//
// Groups grow backwards from a root (the last op of a chain, visited in
// reverse program order) through producers used only inside the group, so
// every value a group computes is either its result or dead outside it.
// Scalar constants become body constants; everything else is an input.
//
//===----------------------------------------------------------------------===//
#include "ir/KilnOps.h"
#include "passes/Passes.h"

#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "kiln-fuse-elementwise"

namespace kiln {
#define GEN_PASS_DEF_FUSEELEMENTWISE
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

bool isF32Tensor(Type t) {
  auto r = llvm::dyn_cast<RankedTensorType>(t);
  return r && r.getElementType().isF32();
}

/// Ops the tile program runs: f32 in, f32 out, elementwise.
bool fusible(Operation *op) {
  if (!llvm::isa<AddOp, SubOp, MulOp, DivOp, MaxOp, MinOp, PowOp, NegOp, ExpOp,
                 LogOp, SqrtOp, RsqrtOp, TanhOp, SigmoidOp, ReluOp, SiluOp,
                 GeluOp, ActivationGradOp>(op))
    return false;
  for (Value v : op->getOperands())
    if (!isF32Tensor(v.getType()))
      return false;
  return isF32Tensor(op->getResult(0).getType());
}

/// A one-element f32 splat constant, which the body can hold.
bool scalarConstant(Value v) {
  auto c = v.getDefiningOp<ConstantOp>();
  if (!c)
    return false;
  auto attr = llvm::dyn_cast<DenseElementsAttr>(c.getValue());
  return attr && attr.isSplat() && attr.getNumElements() == 1 &&
         attr.getElementType().isF32();
}

void fuseFrom(Operation *root, llvm::DenseSet<Operation *> &taken) {
  llvm::SetVector<Operation *> group;
  group.insert(root);
  bool grew = true;
  while (grew) {
    grew = false;
    for (size_t i = 0; i < group.size(); ++i)
      for (Value v : group[i]->getOperands()) {
        Operation *def = v.getDefiningOp();
        if (!def || group.contains(def) || taken.contains(def) ||
            !fusible(def) || def->getBlock() != root->getBlock())
          continue;
        bool onlyInside =
            llvm::all_of(def->getResult(0).getUsers(),
                         [&](Operation *u) { return group.contains(u); });
        if (onlyInside && group.insert(def))
          grew = true;
      }
  }
  if (group.size() < 2)
    return;
  SmallVector<Operation *> ordered(group.begin(), group.end());
  llvm::sort(ordered,
             [](Operation *a, Operation *b) { return a->isBeforeInBlock(b); });
  llvm::SetVector<Value> inputs;
  for (Operation *op : ordered)
    for (Value v : op->getOperands())
      if (!group.contains(v.getDefiningOp()) && !scalarConstant(v))
        inputs.insert(v);

  SmallVector<Location> locs;
  for (Operation *op : ordered)
    locs.push_back(op->getLoc());
  OpBuilder b(root);
  Type resultType = root->getResult(0).getType();
  auto fused = b.create<FusedElementwiseOp>(FusedLoc::get(b.getContext(), locs),
                                            resultType, inputs.getArrayRef());
  Block &body = fused.getBody().front();
  OpBuilder inner = OpBuilder::atBlockEnd(&body);
  auto scalar = RankedTensorType::get({}, b.getF32Type());
  IRMapping map;
  for (auto [i, v] : llvm::enumerate(inputs))
    map.map(v, body.getArgument(i));
  for (Operation *op : ordered) {
    SmallVector<Value> operands;
    for (Value v : op->getOperands()) {
      if (!map.contains(v)) { // a scalar constant: copy it in as rank 0
        auto attr = llvm::cast<DenseElementsAttr>(
            v.getDefiningOp<ConstantOp>().getValue());
        auto c = inner.create<ConstantOp>(
            v.getLoc(), scalar,
            DenseElementsAttr::get(scalar, attr.getSplatValue<Attribute>()));
        map.map(v, c.getResult());
      }
      operands.push_back(map.lookup(v));
    }
    OperationState state(op->getLoc(), op->getName());
    state.addOperands(operands);
    state.addTypes(scalar);
    state.addAttributes(op->getAttrs());
    Operation *clone = inner.create(state);
    map.map(op->getResult(0), clone->getResult(0));
  }
  inner.create<YieldOp>(root->getLoc(), map.lookup(root->getResult(0)));
  LLVM_DEBUG(llvm::dbgs() << "fused " << ordered.size() << " ops\n");
  root->getResult(0).replaceAllUsesWith(fused.getResult());
  for (Operation *op : llvm::reverse(ordered)) {
    taken.insert(op);
    op->erase();
  }
}

struct FuseElementwisePass
    : kiln::impl::FuseElementwiseBase<FuseElementwisePass> {
  void runOnOperation() override {
    SmallVector<Operation *> candidates;
    getOperation().walk([&](Operation *op) {
      if (fusible(op) && !op->getParentOfType<FusedElementwiseOp>() &&
          llvm::cast<RankedTensorType>(op->getResult(0).getType()).getRank() >
              0)
        candidates.push_back(op);
    });
    // Roots in reverse order: a chain's last op claims its producers first.
    llvm::DenseSet<Operation *> taken;
    for (Operation *op : llvm::reverse(candidates))
      if (!taken.contains(op))
        fuseFrom(op, taken);
  }
};

} // namespace
