//===- DeriveDecode.cpp - kiln-derive-decode ------------------------------===//
//
// Incremental decoding from a decoder's forward. A causal decoder computes
// each position from the positions before it, and only three kinds of op
// see positions at all: self-attention (which looks back), rotary
// embeddings and a position table sliced to the sequence. `decode` is a
// clone of the forward function in which those three read the positions
// of this call's tokens (and attention a key/value cache of the earlier
// ones); every other op that sees the tokens is checked to treat each
// position on its own, so the clone computes, for new tokens, exactly what
// the whole recomputation computes for them.
//
//===----------------------------------------------------------------------===//
#include "ir/KilnOps.h"
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "kiln-derive-decode"

namespace kiln {
#define GEN_PASS_DEF_DERIVEDECODE
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

using runtime::attention::PatternKind;

/// The name of the cache-length dimension: "S", unless the model uses it.
std::string cacheSymbol(ModuleOp module) {
  llvm::DenseSet<StringRef> used;
  if (auto dims = module->getAttrOfType<ArrayAttr>("kiln.dims"))
    for (Attribute a : dims)
      if (auto s = llvm::dyn_cast<StringAttr>(a))
        used.insert(s.getValue());
  std::string name = "S";
  while (used.contains(name))
    name += "_cache";
  return name;
}

int64_t rankOf(Value v) {
  return llvm::cast<RankedTensorType>(v.getType()).getRank();
}

/// Whether every axis, counted from the front, is past batch and sequence.
bool featureAxes(ArrayRef<int64_t> axes, int64_t rank) {
  return llvm::all_of(axes, [&](int64_t a) {
    int64_t n = a < 0 ? a + rank : a;
    return n >= 2 && n < rank;
  });
}

struct DeriveDecode : kiln::impl::DeriveDecodeBase<DeriveDecode> {
  using Base::Base;

  void runOnOperation() override;

private:
  /// Why `op`, which reads values computed from the tokens (`seen`), cannot
  /// be decoded one position at a time; "" when it can as it is.
  std::string positionwise(Operation *op,
                           const llvm::DenseSet<Value> &seen) const;
};

std::string
DeriveDecode::positionwise(Operation *op,
                           const llvm::DenseSet<Value> &seen) const {
  auto sees = [&](Value v) { return seen.contains(v); };
  for (Value v : op->getOperands())
    if (sees(v) && rankOf(v) < 2)
      return "it reads a value of rank " + std::to_string(rankOf(v)) +
             " computed from the tokens, which has lost the sequence axis";
  return llvm::TypeSwitch<Operation *, std::string>(op)
      .Case<AddOp, SubOp, MulOp, DivOp, MaxOp, MinOp, PowOp, NegOp, ExpOp,
            LogOp, SqrtOp, RsqrtOp, TanhOp, SigmoidOp, ReluOp, SiluOp, GeluOp,
            CastOp, DropoutOp, func::ReturnOp>([](Operation *) { return ""; })
      .Case([&](MatmulOp m) -> std::string {
        if (sees(m.getRhs()))
          return "it multiplies two values computed from the tokens, which "
                 "mixes positions";
        if (m.getTransposeA() || rankOf(m.getLhs()) < 3)
          return "its left operand is not [B, T, features]";
        return "";
      })
      .Case<LayerNormOp, RMSNormOp>([&](Operation *n) -> std::string {
        if (rankOf(n->getOperand(0)) < 3 ||
            llvm::any_of(n->getOperands().drop_front(), sees))
          return "it does not normalize [B, T, features] by weights";
        return "";
      })
      .Case([&](SoftmaxOp s) -> std::string {
        return featureAxes({s.getAxis()}, rankOf(s.getInput()))
                   ? ""
                   : "it normalizes over the batch or sequence axis";
      })
      .Case([&](SplitOp s) -> std::string {
        return featureAxes({s.getAxis()}, rankOf(s.getInput()))
                   ? ""
                   : "it splits the batch or sequence axis";
      })
      .Case([&](ConcatOp c) -> std::string {
        return featureAxes({c.getAxis()}, rankOf(c.getResult())) &&
                       llvm::all_of(c.getInputs(), sees)
                   ? ""
                   : "it concatenates along the batch or sequence axis, or "
                     "with values that do not come from the tokens";
      })
      .Case([&](SliceOp s) -> std::string {
        return featureAxes({s.getAxis()}, rankOf(s.getInput()))
                   ? ""
                   : "it slices the batch or sequence axis";
      })
      .Case<ReduceSumOp, ReduceMeanOp, ReduceMaxOp>(
          [&](Operation *r) -> std::string {
            auto axes = r->getAttrOfType<DenseI64ArrayAttr>("axes");
            return featureAxes(axes.asArrayRef(), rankOf(r->getOperand(0)))
                       ? ""
                       : "it reduces over the batch or sequence axis";
          })
      .Case([&](TransposeOp t) -> std::string {
        ArrayRef<int64_t> perm = t.getPerm();
        return perm.size() >= 2 && perm[0] == 0 && perm[1] == 1
                   ? ""
                   : "it moves the batch or sequence axis";
      })
      .Case([&](EmbeddingOp e) -> std::string {
        return sees(e.getTable()) ? "it looks up rows of a table computed "
                                    "from the tokens"
                                  : "";
      })
      .Case([&](RopeOp r) -> std::string {
        return r.getPositions() ? "it already takes positions of its own" : "";
      })
      .Case([&](AttentionOp a) -> std::string {
        if (!sees(a.getKey()) && !sees(a.getValue()))
          return a.getMask() && sees(a.getMask())
                     ? "its key mask comes from the tokens"
                     : ""; // attention to a fixed memory (cross-attention)
        if (!sees(a.getQuery()) || !sees(a.getKey()) || !sees(a.getValue()))
          return "its query, key and value do not all come from the tokens";
        if (!a.getCausal())
          return "it is not causal: every position sees later ones";
        if (a.getMask() || a.getBias())
          return "it has a key mask or an additive bias over positions";
        if (AttentionPatternAttr p = a.getPatternAttr()) {
          const runtime::attention::PatternSpec &s = p.getSpec();
          if (s.kind != PatternKind::SlidingWindow || s.globalTokens != 0)
            return "its sparse pattern is not a sliding window";
        }
        if (ShapedType::isDynamic(
                llvm::cast<RankedTensorType>(a.getKey().getType())
                    .getDimSize(2)) ||
            ShapedType::isDynamic(
                llvm::cast<RankedTensorType>(a.getValue().getType())
                    .getDimSize(2)))
          return "its key or value width is not known at compile time";
        return "";
      })
      .Default([](Operation *o) {
        return "'" + o->getName().getStringRef().str() +
               "' is not known to treat positions one by one";
      });
}

void DeriveDecode::runOnOperation() {
  ModuleOp module = getOperation();
  MLIRContext *ctx = &getContext();
  auto reject = [&](Location loc, const Twine &why) {
    LLVM_DEBUG(llvm::dbgs() << "no decode: " << why << "\n");
    if (!required)
      return;
    emitError(loc, "kiln-derive-decode: '")
        << function << "' cannot be decoded incrementally: " << why;
    signalPassFailure();
  };
  auto forward = module.lookupSymbol<func::FuncOp>(function);
  if (!forward || forward.isExternal())
    return reject(module.getLoc(), "the model has no such function");
  if (module.lookupSymbol("decode"))
    return reject(forward.getLoc(), "the model already has a 'decode'");
  FunctionType type = forward.getFunctionType();
  auto tokensType = type.getNumInputs() == 1
                        ? llvm::dyn_cast<RankedTensorType>(type.getInput(0))
                        : RankedTensorType();
  auto tokenDims = forward.getArgAttrOfType<ArrayAttr>(0, "kiln.dims");
  if (!tokensType || tokensType.getRank() != 2 ||
      !tokensType.getElementType().isInteger() || !tokenDims ||
      tokenDims.size() != 2 || !llvm::isa<StringAttr>(tokenDims[0]) ||
      !llvm::isa<StringAttr>(tokenDims[1]))
    return reject(forward.getLoc(),
                  "it must take one argument, token ids [B, T] with symbolic "
                  "batch and sequence dimensions");
  if (type.getNumResults() == 0)
    return reject(forward.getLoc(), "it returns nothing");
  StringRef seqSymbol = llvm::cast<StringAttr>(tokenDims[1]).getValue();

  auto decode = llvm::cast<func::FuncOp>(forward->clone());
  // The clone joins the module only once it is complete.
  auto abandon = [&](Location loc, const Twine &why) {
    decode->destroy();
    reject(loc, why);
  };
  decode.setName("decode");
  Location argLoc = forward.getLoc();
  Block &body = decode.getBody().front();
  Value tokens = body.getArgument(0);
  auto i32 = IntegerType::get(ctx, 32);
  auto dyn = ShapedType::kDynamic;
  auto dimsAttr = [&](ArrayRef<Attribute> dims) {
    return NamedAttribute(StringAttr::get(ctx, "kiln.dims"),
                          ArrayAttr::get(ctx, dims));
  };
  auto argAttrs = [&](StringRef name, ArrayRef<Attribute> dims) {
    return DictionaryAttr::get(
        ctx, {NamedAttribute(StringAttr::get(ctx, "kiln.name"),
                             StringAttr::get(ctx, name)),
              dimsAttr(dims)});
  };
  Attribute batchDim = tokenDims[0], seqDim = tokenDims[1];
  (void)decode.insertArgument(1, RankedTensorType::get({dyn, dyn}, i32),
                              argAttrs("positions", {batchDim, seqDim}),
                              argLoc);
  (void)decode.insertArgument(2, RankedTensorType::get({dyn}, i32),
                              argAttrs("lengths", {batchDim}), argLoc);
  Value positions = body.getArgument(1), lengths = body.getArgument(2);
  std::string cacheDim = cacheSymbol(module);

  llvm::DenseSet<Value> seen{tokens, positions};
  SmallVector<Operation *> ops;
  for (Operation &op : body)
    ops.push_back(&op);
  int caches = 0;
  OpBuilder b(ctx);
  for (Operation *op : ops) {
    bool readsTokens = llvm::any_of(op->getOperands(),
                                    [&](Value v) { return seen.contains(v); });
    if (!readsTokens) {
      if (isa<RelativePositionBucketOp>(op))
        return abandon(op->getLoc(),
                       "relative position buckets (T5's attention bias) are "
                       "not decoded incrementally yet");
      auto slice = llvm::dyn_cast<SliceOp>(op);
      auto end =
          slice ? llvm::dyn_cast<StringAttr>(slice.getEndAttr()) : StringAttr();
      if (!end || !end.getValue().contains(seqSymbol))
        continue;
      // wpe.weight[0:T]: the table's rows at the tokens' positions.
      if (end.getValue() != seqSymbol || slice.getStart() != 0 ||
          slice.getAxis() != 0 || rankOf(slice.getInput()) != 2)
        return abandon(op->getLoc(),
                       "it slices '" + end.getValue().str() +
                           "' in a way that is not a position table lookup");
      b.setInsertionPoint(slice);
      auto lookup =
          b.create<EmbeddingOp>(slice.getLoc(), slice.getInput(), positions);
      slice.getResult().replaceAllUsesWith(lookup.getResult());
      slice->erase();
      seen.insert(lookup.getResult());
      continue;
    }
    if (std::string why = positionwise(op, seen); !why.empty())
      return abandon(op->getLoc(), why);
    if (auto rope = llvm::dyn_cast<RopeOp>(op)) {
      rope->insertOperands(rope->getNumOperands(), {positions});
    } else if (auto a = llvm::dyn_cast<AttentionOp>(op);
               a && seen.contains(a.getKey())) {
      int64_t window = 0;
      if (AttentionPatternAttr p = a.getPatternAttr())
        window = p.getSpec().window;
      auto widthOf = [](Value v) {
        return llvm::cast<RankedTensorType>(v.getType()).getDimSize(2);
      };
      Type element =
          llvm::cast<RankedTensorType>(a.getKey().getType()).getElementType();
      std::string prefix = "cache." + std::to_string(caches++) + ".";
      unsigned at = decode.getNumArguments();
      for (auto [name, width] :
           {std::pair<std::string, int64_t>{"key", widthOf(a.getKey())},
            {"value", widthOf(a.getValue())}})
        (void)decode.insertArgument(
            decode.getNumArguments(),
            RankedTensorType::get({dyn, dyn, width}, element),
            argAttrs(prefix + name,
                     {batchDim, StringAttr::get(ctx, cacheDim),
                      IntegerAttr::get(IntegerType::get(ctx, 64), width)}),
            argLoc);
      b.setInsertionPoint(a);
      auto cached = b.create<CachedAttentionOp>(
          a.getLoc(), a.getResult().getType(), a.getQuery(), a.getKey(),
          a.getValue(), body.getArgument(at), body.getArgument(at + 1),
          positions, lengths, a.getNumHeadsAttr(), a.getNumKvHeadsAttr(),
          a.getScaleAttr(), b.getI64IntegerAttr(window));
      a.getResult().replaceAllUsesWith(cached.getResult());
      a->erase();
      seen.insert(cached.getResult());
      continue;
    }
    for (Value r : op->getResults())
      seen.insert(r);
  }
  auto ret = llvm::cast<func::ReturnOp>(body.getTerminator());
  for (Value v : ret.getOperands())
    if (!seen.contains(v))
      return abandon(ret.getLoc(), "a result does not come from the tokens");
  if (caches == 0)
    return abandon(forward.getLoc(), "it has no causal self-attention");

  // A position lookup is [B, T, D] where the slice was [T, D]: refresh the
  // types that follow from it.
  for (Operation &op : body) {
    auto infer = llvm::dyn_cast<InferTypeOpInterface>(&op);
    if (!infer)
      continue;
    SmallVector<Type> types;
    if (failed(infer.inferReturnTypes(
            ctx, op.getLoc(), op.getOperands(), op.getAttrDictionary(),
            op.getPropertiesStorage(), op.getRegions(), types)))
      return abandon(op.getLoc(), "its shapes do not hold per position");
    for (auto [result, t] : llvm::zip(op.getResults(), types))
      if (llvm::cast<RankedTensorType>(result.getType()).getRank() !=
          llvm::cast<RankedTensorType>(t).getRank())
        result.setType(t);
  }
  decode.setType(
      FunctionType::get(ctx, body.getArgumentTypes(), ret.getOperandTypes()));
  module.push_back(decode);
  SmallVector<Attribute> dims;
  if (auto old = module->getAttrOfType<ArrayAttr>("kiln.dims"))
    dims.assign(old.begin(), old.end());
  dims.push_back(StringAttr::get(ctx, cacheDim));
  module->setAttr("kiln.dims", ArrayAttr::get(ctx, dims));
  LLVM_DEBUG(llvm::dbgs() << "decode: " << caches << " cached attentions\n");
}

} // namespace
