//===- Autodiff.cpp - reverse-mode automatic differentiation --------------===//
#include "ir/KilnOps.h"
#include "ir/Locations.h"
#include "passes/Passes.h"

#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "kiln-autodiff"

namespace kiln {
#define GEN_PASS_DEF_AUTODIFF
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

/// Activation recomputation (see the pass description). `forward` lists the
/// forward ops of the gradient function; everything after them is backward.
void recomputeBlocks(Block &body, ArrayRef<Operation *> forward) {
  llvm::DenseSet<Operation *> isForward(forward.begin(), forward.end());
  llvm::MapVector<StringRef, SmallVector<Operation *>> blocks;
  for (Operation *op : forward) {
    StringRef name = blockInstance(op->getLoc());
    if (!name.empty() && !llvm::isa<ParamOp, ConstantOp>(op))
      blocks[name].push_back(op);
  }
  llvm::DenseMap<Operation *, unsigned> position;
  auto renumber = [&] {
    unsigned i = 0;
    for (Operation &op : body)
      position[&op] = i++;
  };
  for (auto &[name, ops] : blocks) {
    renumber();
    llvm::DenseSet<Operation *> members(ops.begin(), ops.end());
    // Values internal to the block: every forward use is inside it.
    llvm::DenseSet<Value> internal;
    for (Operation *op : ops)
      for (Value r : op->getResults())
        if (llvm::all_of(r.getUsers(), [&](Operation *u) {
              return !isForward.count(u) || members.count(u);
            }))
          internal.insert(r);
    // The first backward op (not a recomputed clone) that reads one.
    Operation *first = nullptr;
    for (Value v : internal)
      for (Operation *u : v.getUsers())
        if (!isForward.count(u) && !u->hasAttr("kiln.recomputed") &&
            (!first || position[u] < position[first]))
          first = u;
    if (!first)
      continue;
    OpBuilder b(first);
    IRMapping map;
    for (Operation *op : ops) {
      Operation *clone = b.clone(*op, map);
      clone->setAttr("kiln.recomputed", b.getUnitAttr());
    }
    unsigned at = position[first];
    for (Value v : internal)
      v.replaceUsesWithIf(map.lookup(v), [&](OpOperand &use) {
        Operation *u = use.getOwner();
        return !isForward.count(u) && position.count(u) && position[u] >= at &&
               !u->hasAttr("kiln.recomputed");
      });
  }
}

struct AutodiffPass : kiln::impl::AutodiffBase<AutodiffPass> {
  using AutodiffBase::AutodiffBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto fn = module.lookupSymbol<func::FuncOp>(function);
    if (!fn || fn.isExternal()) {
      module.emitError("kiln-autodiff: the module has no function '")
          << function << "' to differentiate";
      return signalPassFailure();
    }
    auto resultTypes = fn.getFunctionType().getResults();
    auto lossType = resultTypes.empty()
                        ? RankedTensorType()
                        : llvm::dyn_cast<RankedTensorType>(resultTypes[0]);
    if (!lossType || lossType.getRank() != 0 ||
        !lossType.getElementType().isF32()) {
      fn.emitError("kiln-autodiff: '")
          << function << "' must return a scalar f32 loss first";
      return signalPassFailure();
    }
    std::string gradName = function + "_grad";
    if (module.lookupSymbol(gradName)) {
      fn.emitError("kiln-autodiff: '") << gradName << "' already exists";
      return signalPassFailure();
    }

    // The gradient function starts as a copy of the forward function.
    OpBuilder b(module.getContext());
    b.setInsertionPointAfter(fn);
    auto grad = llvm::cast<func::FuncOp>(b.clone(*fn));
    grad.setName(gradName);
    Block &body = grad.getBody().front();

    // Attention saves the log-sum-exp of its scores for the fused backward.
    SmallVector<AttentionOp> attentions;
    grad.walk([&](AttentionOp a) {
      if (!a.getSaveLse())
        attentions.push_back(a);
    });
    for (AttentionOp a : attentions) {
      b.setInsertionPoint(a);
      auto q = llvm::cast<RankedTensorType>(a.getQuery().getType());
      auto lseType = RankedTensorType::get(
          {q.getDimSize(0), static_cast<int64_t>(a.getNumHeads()),
           q.getDimSize(1)},
          b.getF32Type());
      auto saving = b.create<AttentionOp>(
          a.getLoc(), a.getResult().getType(), lseType, a.getQuery(),
          a.getKey(), a.getValue(), a.getMask(), a.getBias(),
          a.getNumHeadsAttr(), a.getNumKvHeadsAttr(), a.getScaleAttr(),
          a.getCausalAttr(), a.getPatternAttr(), b.getUnitAttr());
      a.getResult().replaceAllUsesWith(saving.getResult());
      a.erase();
    }
    auto ret = llvm::cast<func::ReturnOp>(body.getTerminator());
    Value loss = ret.getOperand(0);

    llvm::DenseMap<Value, Value> grads;
    llvm::StringMap<Value> paramGrads;
    b.setInsertionPoint(ret);
    auto accumulate = [&](llvm::DenseMap<Value, Value> &map, Value key, Value g,
                          Location loc) {
      auto [it, inserted] = map.try_emplace(key, g);
      if (!inserted)
        it->second = b.create<AddOp>(loc, it->second.getType(), it->second, g);
    };
    auto oneType = RankedTensorType::get({}, b.getF32Type());
    grads[loss] = b.create<ConstantOp>(
        loss.getLoc(), oneType,
        llvm::cast<ElementsAttr>(DenseElementsAttr::get(oneType, 1.0f)));

    SmallVector<Operation *> forward;
    for (Operation &op : body.without_terminator())
      forward.push_back(&op);
    // Activity: the values that depend on a trainable parameter. Gradients
    // flow only into those, so frozen weights (quantized, or the base under
    // LoRA adapters) get no gradient products at all.
    llvm::StringSet<> frozen;
    for (ParameterOp p : module.getOps<ParameterOp>())
      if (p.getFrozen())
        frozen.insert(p.getSymName());
    llvm::DenseSet<Value> varied;
    for (Operation *op : forward) {
      bool active = false;
      if (auto p = llvm::dyn_cast<ParamOp>(op))
        active = !frozen.contains(p.getName());
      else
        active = llvm::any_of(op->getOperands(),
                              [&](Value v) { return varied.contains(v); });
      if (active)
        for (Value r : op->getResults())
          varied.insert(r);
    }
    for (Operation *op : llvm::reverse(forward)) {
      SmallVector<Value> resultGrads;
      bool reached = false;
      for (Value r : op->getResults()) {
        Value g = grads.lookup(r);
        reached |= static_cast<bool>(g);
        resultGrads.push_back(g);
      }
      // Constants are not differentiated with respect to anything.
      if (!reached || op->hasTrait<OpTrait::ConstantLike>())
        continue;
      if (auto p = llvm::dyn_cast<ParamOp>(op)) {
        auto [it, inserted] =
            paramGrads.try_emplace(p.getName(), resultGrads[0]);
        if (!inserted)
          it->second = b.create<AddOp>(p.getLoc(), it->second.getType(),
                                       it->second, resultGrads[0]);
        continue;
      }
      auto diff = llvm::dyn_cast<DifferentiableOpInterface>(op);
      if (!diff) {
        op->emitError("kiln-autodiff: no gradient rule for '")
            << op->getName() << "' yet; the loss depends on it";
        return signalPassFailure();
      }
      SmallVector<Value> operandGrads;
      if (failed(diff.buildVJP(b, resultGrads, operandGrads)))
        return signalPassFailure();
      for (auto [operand, g] : llvm::zip(op->getOperands(), operandGrads))
        if (g && varied.contains(operand))
          accumulate(grads, operand, g, op->getLoc());
    }

    // Results: the loss, then one gradient per trainable parameter (frozen
    // ones have none: no zeros to compute, store or return).
    SmallVector<Value> results{loss};
    SmallVector<Type> types{loss.getType()};
    auto lossName = grad.getResultAttrOfType<StringAttr>(0, "kiln.name");
    SmallVector<Attribute> names{lossName ? lossName : b.getStringAttr("loss")};
    for (ParameterOp p : module.getOps<ParameterOp>()) {
      if (p.getFrozen())
        continue;
      auto type = llvm::cast<RankedTensorType>(p.getType());
      Value g = paramGrads.lookup(p.getSymName());
      if (!g)
        g = b.create<ConstantOp>(
            p.getLoc(), type,
            llvm::cast<ElementsAttr>(DenseElementsAttr::get(
                type, b.getFloatAttr(type.getElementType(), 0.0))));
      results.push_back(g);
      types.push_back(type);
      names.push_back(b.getStringAttr(p.getSymName()));
    }
    b.create<func::ReturnOp>(ret.getLoc(), results);
    ret.erase();
    if (recompute)
      recomputeBlocks(body, forward);
    grad.setType(
        FunctionType::get(module.getContext(), grad.getArgumentTypes(), types));
    // Parameter gradients have static shapes; the loss is a scalar. The
    // results are named: the loss as the function names it, each gradient
    // "<parameter>.grad" (as PyTorch's param.grad).
    SmallVector<DictionaryAttr> resultAttrs;
    for (auto [i, t] : llvm::enumerate(types)) {
      SmallVector<Attribute> dims;
      for (int64_t d : llvm::cast<RankedTensorType>(t).getShape())
        dims.push_back(b.getI64IntegerAttr(d));
      std::string name = llvm::cast<StringAttr>(names[i]).str();
      if (i > 0)
        name += ".grad";
      resultAttrs.push_back(b.getDictionaryAttr(
          {b.getNamedAttr("kiln.dims", b.getArrayAttr(dims)),
           b.getNamedAttr("kiln.name", b.getStringAttr(name))}));
    }
    grad.setAllResultAttrs(resultAttrs);
    grad->setAttr("kiln.gradients", b.getArrayAttr(names));
    LLVM_DEBUG(llvm::dbgs() << "built " << gradName << " with "
                            << results.size() - 1 << " parameter gradients\n");
  }
};

} // namespace
