//===- TrainStep.cpp - a compiled training step ---------------------------===//
#include "ir/KilnOps.h"
#include "passes/Passes.h"

namespace kiln {
#define GEN_PASS_DEF_TRAINSTEP
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

struct TrainStepPass : kiln::impl::TrainStepBase<TrainStepPass> {
  using TrainStepBase::TrainStepBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    std::string gradName = function + "_grad";
    auto grad = module.lookupSymbol<func::FuncOp>(gradName);
    if (!grad || grad.isExternal()) {
      module.emitError("kiln-train-step: the module has no '")
          << gradName << "'; run kiln-autodiff first";
      return signalPassFailure();
    }
    std::optional<OptimizerKind> kind = symbolizeOptimizerKind(optimizer);
    if (!kind) {
      module.emitError("kiln-train-step: optimizer must be adamw or sgd, got '")
          << optimizer << "'";
      return signalPassFailure();
    }
    if (module.lookupSymbol("train_step")) {
      grad.emitError("kiln-train-step: 'train_step' already exists");
      return signalPassFailure();
    }
    SmallVector<ParameterOp> params(module.getOps<ParameterOp>());
    OpBuilder b(module.getContext());
    b.setInsertionPointAfter(grad);
    auto step = llvm::cast<func::FuncOp>(b.clone(*grad));
    step.setName("train_step");
    step->removeAttr("kiln.gradients");
    Block &body = step.getBody().front();
    auto scalar = RankedTensorType::get({}, b.getF32Type());
    Location loc = step.getLoc();
    Value lr = body.addArgument(scalar, loc);
    Value count = body.addArgument(scalar, loc);
    auto ret = llvm::cast<func::ReturnOp>(body.getTerminator());
    // Frozen parameters have no gradient, and are neither clipped with nor
    // updated.
    SmallVector<ParameterOp> trained;
    for (ParameterOp p : params)
      if (!p.getFrozen())
        trained.push_back(p);
    if (ret.getNumOperands() != trained.size() + 1) {
      grad.emitError("kiln-train-step: '")
          << gradName << "' must return the loss and one gradient per "
          << "trainable parameter";
      return signalPassFailure();
    }
    b.setInsertionPoint(ret);
    SmallVector<Value> grads(ret.getOperands().drop_front());
    if (grads.empty()) {
      module.emitError("kiln-train-step: every parameter is frozen; there is "
                       "nothing to train");
      return signalPassFailure();
    }
    Value norm = b.create<GlobalNormOp>(loc, scalar, grads);
    for (auto [p, g] : llvm::zip(trained, grads)) {
      auto type = llvm::cast<RankedTensorType>(p.getType());
      Value param = b.create<ParamOp>(p.getLoc(), type, p.getSymName());
      double wd = type.getRank() >= 2 ? weightDecay : 0.0;
      b.create<OptimizerUpdateOp>(
          p.getLoc(), param, g, norm, lr, count,
          OptimizerKindAttr::get(b.getContext(), *kind),
          b.getF64FloatAttr(beta1), b.getF64FloatAttr(beta2),
          b.getF64FloatAttr(eps), b.getF64FloatAttr(wd),
          b.getF64FloatAttr(momentum), b.getF64FloatAttr(maxNorm));
    }
    Value loss = ret.getOperand(0);
    b.create<func::ReturnOp>(ret.getLoc(), ValueRange{loss, norm});
    ret.erase();
    SmallVector<Type> inputs(body.getArgumentTypes());
    step.setType(
        FunctionType::get(module.getContext(), inputs, {scalar, scalar}));
    auto scalarResult = [&](const char *name) {
      return b.getDictionaryAttr(
          {b.getNamedAttr("kiln.dims", b.getArrayAttr({})),
           b.getNamedAttr("kiln.name", b.getStringAttr(name))});
    };
    SmallVector<DictionaryAttr> argAttrs;
    for (unsigned i = 0; i + 2 < inputs.size(); ++i)
      argAttrs.push_back(step.getArgAttrDict(i));
    for (const char *name : {"lr", "step"})
      argAttrs.push_back(b.getDictionaryAttr(
          {b.getNamedAttr("kiln.dims", b.getArrayAttr({})),
           b.getNamedAttr("kiln.name", b.getStringAttr(name))}));
    step.setAllArgAttrs(argAttrs);
    step.setAllResultAttrs(ArrayRef<DictionaryAttr>{scalarResult("loss"),
                                                    scalarResult("grad_norm")});
  }
};

} // namespace
