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
// the whole recomputation computes for them. T5's relative position bias
// on that self-attention becomes the cached attention's bucketed table; an
// encoder-decoder's encoder, and whatever else the decoder reads from its
// other inputs without the tokens, moves into a derived `prepare` that
// runs once per source.
//
//===----------------------------------------------------------------------===//
#include "ir/KilnOps.h"
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "llvm/ADT/BitVector.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SetVector.h"
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
  /// `relativeBias`: op is an attention whose bias is the tokens'
  /// relative position bias, which the cached attention computes.
  std::string positionwise(Operation *op, const llvm::DenseSet<Value> &seen,
                           bool relativeBias) const;
};

std::string DeriveDecode::positionwise(Operation *op,
                                       const llvm::DenseSet<Value> &seen,
                                       bool relativeBias) const {
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
        return featureAxes({static_cast<int64_t>(s.getAxis())},
                           rankOf(s.getInput()))
                   ? ""
                   : "it normalizes over the batch or sequence axis";
      })
      .Case([&](SplitOp s) -> std::string {
        return featureAxes({static_cast<int64_t>(s.getAxis())},
                           rankOf(s.getInput()))
                   ? ""
                   : "it splits the batch or sequence axis";
      })
      .Case([&](ConcatOp c) -> std::string {
        return featureAxes({static_cast<int64_t>(c.getAxis())},
                           rankOf(c.getResult())) &&
                       llvm::all_of(c.getInputs(), sees)
                   ? ""
                   : "it concatenates along the batch or sequence axis, or "
                     "with values that do not come from the tokens";
      })
      .Case([&](SliceOp s) -> std::string {
        return featureAxes({static_cast<int64_t>(s.getAxis())},
                           rankOf(s.getInput()))
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
        if (a.getMask() || (a.getBias() && !relativeBias))
          return "it has a key mask or an additive bias over positions "
                 "other than a relative position bias";
        if (relativeBias && a.getPatternAttr())
          return "it has both a relative position bias and a sparse pattern";
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

/// The values computed from `from`, in `body`'s order.
llvm::DenseSet<Value> reachedFrom(Block &body, ArrayRef<Value> from) {
  llvm::DenseSet<Value> reached(from.begin(), from.end());
  for (Operation &op : body)
    if (llvm::any_of(op.getOperands(),
                     [&](Value v) { return reached.contains(v); }))
      reached.insert(op.getResults().begin(), op.getResults().end());
  return reached;
}

/// Whether argument `i` can be token ids: integer [B, T], both dimensions
/// named.
bool tokenLike(func::FuncOp f, unsigned i) {
  auto type = llvm::dyn_cast<RankedTensorType>(f.getArgumentTypes()[i]);
  auto dims = f.getArgAttrOfType<ArrayAttr>(i, "kiln.dims");
  return type && type.getRank() == 2 && type.getElementType().isInteger() &&
         dims && dims.size() == 2 && llvm::isa<StringAttr>(dims[0]) &&
         llvm::isa<StringAttr>(dims[1]);
}

/// The argument holding the tokens to decode: the only one, or of several
/// (an encoder-decoder's source ids, mask and target ids) the token ids
/// that reach a causal attention's query and whose sequence dimension is
/// the result's (T5's decoder_input_ids [B, T] for logits [B, T, V]; the
/// source ids [B, S] reach the decoder's later layers too, through the
/// cross-attention). "" or why there is none.
std::string decodedArgument(func::FuncOp forward, unsigned &index) {
  unsigned n = forward.getNumArguments();
  if (n == 1) {
    index = 0;
    return tokenLike(forward, 0)
               ? ""
               : "its argument must be token ids [B, T] with symbolic batch "
                 "and sequence dimensions";
  }
  Block &body = forward.getBody().front();
  auto resultDims = forward.getNumResults() > 0
                        ? forward.getResultAttrOfType<ArrayAttr>(0, "kiln.dims")
                        : ArrayAttr();
  SmallVector<unsigned> found;
  for (unsigned i = 0; i < n; ++i) {
    if (!tokenLike(forward, i) || !resultDims || resultDims.size() < 2 ||
        forward.getArgAttrOfType<ArrayAttr>(i, "kiln.dims")[1] != resultDims[1])
      continue;
    llvm::DenseSet<Value> reached = reachedFrom(body, {body.getArgument(i)});
    bool causal = false;
    body.walk([&](AttentionOp a) {
      causal |= a.getCausal() && reached.contains(a.getQuery());
    });
    if (causal)
      found.push_back(i);
  }
  if (found.size() != 1)
    return found.empty() ? "none of its arguments are token ids [B, T] that "
                           "reach a causal self-attention and share the "
                           "result's sequence dimension"
                         : "several of its arguments reach a causal "
                           "self-attention; which one to decode is ambiguous";
  index = found[0];
  return "";
}

/// T5's relative position bias as the derivation follows it: the buckets of
/// the tokens' positions, their rows of a table, and those rows as an
/// [H, T, T] attention bias.
struct RelativeBias {
  enum Stage { Buckets, Rows, Bias } stage = Buckets;
  RelativePositionBucketOp buckets;
  Value table;
};

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
  for (StringRef name : {"decode", "prepare"})
    if (module.lookupSymbol(name))
      return reject(forward.getLoc(), "the model already has a '" + name + "'");
  FunctionType type = forward.getFunctionType();
  if (type.getNumResults() == 0)
    return reject(forward.getLoc(), "it returns nothing");
  unsigned tokenArg = 0;
  if (std::string why = decodedArgument(forward, tokenArg); !why.empty())
    return reject(forward.getLoc(), why);
  auto tokenDims = forward.getArgAttrOfType<ArrayAttr>(tokenArg, "kiln.dims");
  StringRef seqSymbol = llvm::cast<StringAttr>(tokenDims[1]).getValue();
  unsigned numInputs = type.getNumInputs();
  // The other inputs are held for the whole decoding (a source and its
  // mask); one along the decoded sequence would need a new slice per step.
  for (unsigned i = 0; i < numInputs; ++i)
    if (auto dims = forward.getArgAttrOfType<ArrayAttr>(i, "kiln.dims");
        i != tokenArg && dims &&
        llvm::is_contained(dims.getValue(), tokenDims[1]))
      return reject(
          forward.getLoc(),
          "it also takes '" +
              forward.getArgAttrOfType<StringAttr>(i, "kiln.name").str() +
              "' along the decoded sequence '" + seqSymbol +
              "', which decode cannot take one step at a time");

  auto decode = llvm::cast<func::FuncOp>(forward->clone());
  // The clone joins the module only once it is complete.
  auto abandon = [&](Location loc, const Twine &why) {
    decode->destroy();
    reject(loc, why);
  };
  decode.setName("decode");
  Location argLoc = forward.getLoc();
  Block &body = decode.getBody().front();
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
  // decode(tokens, positions, lengths, <forward's other inputs>, memories,
  // caches): the forward's arguments stay, after the three, until the
  // unused ones go at the end.
  (void)decode.insertArgument(0, type.getInput(tokenArg),
                              forward.getArgAttrDict(tokenArg), argLoc);
  (void)decode.insertArgument(1, RankedTensorType::get({dyn, dyn}, i32),
                              argAttrs("positions", {batchDim, seqDim}),
                              argLoc);
  (void)decode.insertArgument(2, RankedTensorType::get({dyn}, i32),
                              argAttrs("lengths", {batchDim}), argLoc);
  constexpr unsigned kInputs = 3; // the forward's arguments start here
  Value tokens = body.getArgument(0), positions = body.getArgument(1),
        lengths = body.getArgument(2);
  body.getArgument(kInputs + tokenArg).replaceAllUsesWith(tokens);
  std::string cacheDim = cacheSymbol(module);

  llvm::DenseSet<Value> seen{tokens, positions};
  llvm::DenseMap<Value, RelativeBias> relative;
  SmallVector<Operation *> ops;
  for (Operation &op : body)
    ops.push_back(&op);
  int caches = 0;
  OpBuilder b(ctx);
  for (Operation *op : ops) {
    bool readsTokens = llvm::any_of(op->getOperands(),
                                    [&](Value v) { return seen.contains(v); });
    auto readsRelative = [&](RelativeBias::Stage stage) {
      return llvm::any_of(op->getOperands(), [&](Value v) {
        auto it = relative.find(v);
        return it != relative.end() && it->second.stage == stage;
      });
    };
    if (auto r = llvm::dyn_cast<RelativePositionBucketOp>(op);
        r && readsTokens) {
      // Buckets of the tokens' own positions (T5's decoder): the cached
      // attention computes them for the cached positions.
      if (r.getQuery() != r.getKey())
        return abandon(op->getLoc(), "its relative position buckets are not "
                                     "of the sequence against itself");
      relative[r.getResult()] = {RelativeBias::Buckets, r, Value()};
      continue;
    }
    if (auto e = llvm::dyn_cast<EmbeddingOp>(op);
        e && relative.contains(e.getIndices()) &&
        !seen.contains(e.getTable())) {
      RelativeBias rb = relative.lookup(e.getIndices());
      if (rb.stage == RelativeBias::Buckets) {
        relative[e.getResult()] = {RelativeBias::Rows, rb.buckets,
                                   e.getTable()};
        continue;
      }
    }
    if (auto t = llvm::dyn_cast<TransposeOp>(op);
        t && readsRelative(RelativeBias::Rows) &&
        t.getPerm() == ArrayRef<int64_t>{2, 0, 1}) {
      RelativeBias rb = relative.lookup(t.getInput());
      relative[t.getResult()] = {RelativeBias::Bias, rb.buckets, rb.table};
      continue;
    }
    auto attention = llvm::dyn_cast<AttentionOp>(op);
    bool relativeBias =
        attention && attention.getBias() &&
        relative.contains(attention.getBias()) &&
        relative.lookup(attention.getBias()).stage == RelativeBias::Bias;
    for (Value v : op->getOperands())
      if (relative.contains(v) && !(relativeBias && v == attention.getBias()))
        return abandon(op->getLoc(),
                       "relative position buckets of the tokens are decoded "
                       "only as transpose(table(buckets), perm = [2, 0, 1]), "
                       "the bias of a causal self-attention");
    if (!readsTokens) {
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
    if (std::string why = positionwise(op, seen, relativeBias); !why.empty())
      return abandon(op->getLoc(), why);
    if (auto rope = llvm::dyn_cast<RopeOp>(op)) {
      rope->insertOperands(rope->getNumOperands(), {positions});
    } else if (attention && seen.contains(attention.getKey())) {
      AttentionOp a = attention;
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
      RelativeBias rb;
      if (relativeBias)
        rb = relative.lookup(a.getBias());
      b.setInsertionPoint(a);
      auto cached = b.create<CachedAttentionOp>(
          a.getLoc(), a.getResult().getType(), a.getQuery(), a.getKey(),
          a.getValue(), body.getArgument(at), body.getArgument(at + 1),
          positions, lengths, rb.table, a.getNumHeadsAttr(),
          a.getNumKvHeadsAttr(), a.getScaleAttr(), b.getI64IntegerAttr(window),
          b.getI64IntegerAttr(relativeBias ? rb.buckets.getNumBuckets() : 0),
          b.getI64IntegerAttr(relativeBias ? rb.buckets.getMaxDistance() : 0),
          b.getBoolAttr(relativeBias && rb.buckets.getBidirectional()));
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

  // What the tokens' computation reads from the forward's other inputs (an
  // encoder's output, its keys and values for cross-attention) is the same
  // at every step: `prepare` computes it once, and decode takes it as
  // memory inputs.
  SmallVector<Value> inputs;
  for (unsigned i = 0; i < numInputs; ++i)
    if (i != tokenArg)
      inputs.push_back(body.getArgument(kInputs + i));
  llvm::DenseSet<Value> fromInputs = reachedFrom(body, inputs);
  llvm::SetVector<Value> memory;
  for (Operation &op : body)
    if (llvm::any_of(op.getOperands(),
                     [&](Value v) { return seen.contains(v); }))
      for (Value v : op.getOperands())
        if (!seen.contains(v) && fromInputs.contains(v) &&
            !llvm::isa<BlockArgument>(v))
          memory.insert(v);
  func::FuncOp prepare;
  if (!memory.empty()) {
    // The inputs memory is computed from, which name its dimensions.
    llvm::DenseSet<Value> needed(memory.begin(), memory.end());
    for (Operation &op : llvm::reverse(body))
      if (llvm::any_of(op.getResults(),
                       [&](Value v) { return needed.contains(v); }))
        needed.insert(op.getOperands().begin(), op.getOperands().end());
    SmallVector<unsigned> prepareArgs;
    Attribute memoryDim;
    for (unsigned i = 0; i < numInputs; ++i) {
      if (i == tokenArg || !needed.contains(body.getArgument(kInputs + i)))
        continue;
      prepareArgs.push_back(i);
      auto dims = forward.getArgAttrOfType<ArrayAttr>(i, "kiln.dims");
      if (!dims || dims.size() < 2 || dims[0] != batchDim ||
          (memoryDim && dims[1] != memoryDim))
        return abandon(forward.getLoc(),
                       "the inputs its decoder reads besides the tokens must "
                       "be [" +
                           llvm::cast<StringAttr>(batchDim).str() +
                           ", S, ...] with one source length S");
      memoryDim = dims[1];
    }
    SmallVector<Attribute> memoryDims;
    for (auto [i, v] : llvm::enumerate(memory)) {
      auto t = llvm::cast<RankedTensorType>(v.getType());
      SmallVector<Attribute> dims;
      for (auto [d, size] : llvm::enumerate(t.getShape())) {
        if (!ShapedType::isDynamic(size))
          dims.push_back(IntegerAttr::get(IntegerType::get(ctx, 64), size));
        else if (d < 2)
          dims.push_back(d == 0 ? batchDim : memoryDim);
        else
          return abandon(v.getLoc(),
                         "what it reads from its other inputs is not [B, S, "
                         "features] with known features");
      }
      memoryDims.push_back(ArrayAttr::get(ctx, dims));
    }
    SmallVector<Type> argTypes, memoryTypes;
    for (unsigned i : prepareArgs)
      argTypes.push_back(type.getInput(i));
    for (Value v : memory)
      memoryTypes.push_back(v.getType());
    prepare =
        func::FuncOp::create(forward.getLoc(), "prepare",
                             FunctionType::get(ctx, argTypes, memoryTypes));
    IRMapping map;
    Block *entry = prepare.addEntryBlock();
    for (auto [j, i] : llvm::enumerate(prepareArgs)) {
      prepare.setArgAttrs(j, forward.getArgAttrDict(i));
      map.map(body.getArgument(kInputs + i), entry->getArgument(j));
    }
    b.setInsertionPointToEnd(entry);
    for (Operation &op : body)
      if (llvm::any_of(op.getResults(),
                       [&](Value v) { return needed.contains(v); }))
        b.clone(op, map);
    SmallVector<Value> results;
    for (Value v : memory)
      results.push_back(map.lookup(v));
    b.create<func::ReturnOp>(forward.getLoc(), results);
    for (auto [i, value] : llvm::enumerate(memory)) {
      Value v = value;
      prepare.setResultAttrs(
          i, argAttrs("memory." + std::to_string(i),
                      llvm::cast<ArrayAttr>(memoryDims[i]).getValue()));
      unsigned at = decode.getNumArguments();
      (void)decode.insertArgument(
          at, v.getType(),
          argAttrs("memory." + std::to_string(i),
                   llvm::cast<ArrayAttr>(memoryDims[i]).getValue()),
          argLoc);
      v.replaceAllUsesWith(body.getArgument(at));
    }
  }
  // What only fed the memory (the encoder), the replaced relative bias and
  // the forward's inputs nothing reads any more go.
  for (Operation &op : llvm::make_early_inc_range(llvm::reverse(body)))
    if (!op.hasTrait<OpTrait::IsTerminator>() && !isa<CachedAttentionOp>(op) &&
        op.use_empty())
      op.erase();
  llvm::BitVector unused(decode.getNumArguments());
  for (unsigned i = 0; i < numInputs; ++i)
    if (body.getArgument(kInputs + i).use_empty())
      unused.set(kInputs + i);
  decode.eraseArguments(unused);

  // A position lookup is [B, T, D] where the slice was [T, D]: refresh the
  // types that follow from it.
  for (Operation &op : body) {
    auto infer = llvm::dyn_cast<InferTypeOpInterface>(&op);
    if (!infer)
      continue;
    SmallVector<Type> types;
    if (failed(infer.inferReturnTypes(
            ctx, op.getLoc(), op.getOperands(), op.getAttrDictionary(),
            op.getPropertiesStorage(), op.getRegions(), types))) {
      if (prepare)
        prepare->destroy();
      return abandon(op.getLoc(), "its shapes do not hold per position");
    }
    for (auto [result, t] : llvm::zip(op.getResults(), types))
      if (llvm::cast<RankedTensorType>(result.getType()).getRank() !=
          llvm::cast<RankedTensorType>(t).getRank())
        result.setType(t);
  }
  decode.setType(
      FunctionType::get(ctx, body.getArgumentTypes(), ret.getOperandTypes()));
  module.push_back(decode);
  if (prepare)
    module.push_back(prepare);
  SmallVector<Attribute> dims;
  if (auto old = module->getAttrOfType<ArrayAttr>("kiln.dims"))
    dims.assign(old.begin(), old.end());
  dims.push_back(StringAttr::get(ctx, cacheDim));
  module->setAttr("kiln.dims", ArrayAttr::get(ctx, dims));
  LLVM_DEBUG(llvm::dbgs() << "decode: " << caches << " cached attentions, "
                          << memory.size() << " memory inputs\n");
}

} // namespace
