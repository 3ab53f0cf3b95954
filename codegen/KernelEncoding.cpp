//===- KernelEncoding.cpp - one kiln op as a runtime kernel ---------------===//
//
// One case per kiln op that reaches the CPU backend: the runtime op it
// becomes and its attribute table. Operands need no code: they keep ODS
// order, which is the runtime's, and an absent optional operand (an empty
// ODS operand segment, or a missing trailing one) becomes -1.
//
//===----------------------------------------------------------------------===//
#include "codegen/KernelEncoding.h"
#include "ir/KilnOps.h"
#include "runtime/core/OpTable.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace kiln;
namespace fb = flatbuffers;

namespace {

/// An attention op's pattern with its causality: what the artifact stores.
template <typename AttentionLike>
runtime::attention::PatternSpec patternOf(AttentionLike a) {
  runtime::attention::PatternSpec s;
  if (AttentionPatternAttr p = a.getPatternAttr())
    s = p.getSpec();
  s.causal = a.getCausal();
  return s;
}

/// An attention-like op's heads, scale and pattern: the attribute table
/// of Attention, AttentionGrad and CachedAttention.
template <typename AttentionLike>
fb::Offset<kart::AttentionAttrs>
attentionAttrs(fb::FlatBufferBuilder &fbb, AttentionLike a,
               const runtime::attention::PatternSpec &ps,
               fb::Offset<kart::RelativePositionBucketAttrs> relative = 0) {
  auto pattern = kart::CreateAttentionPattern(
      fbb, static_cast<kart::PatternKind>(ps.kind), ps.causal, ps.window,
      ps.block, ps.local, ps.globalBlocks, ps.random, ps.seed, ps.stride,
      ps.summary, ps.globalTokens);
  return kart::CreateAttentionAttrs(fbb, a.getNumHeads(), a.getNumKvHeads(),
                                    a.getScale().convertToDouble(), pattern,
                                    relative);
}

// The dialect's kinds and the schema's share their cases (ir/KilnEnums.td,
// kart.fbs); these keep the two numbering-independent.
kart::Activation toKart(Activation a) {
  switch (a) {
  case Activation::None:
    return kart::Activation::None;
  case Activation::Relu:
    return kart::Activation::Relu;
  case Activation::Gelu:
    return kart::Activation::Gelu;
  case Activation::GeluTanh:
    return kart::Activation::GeluTanh;
  case Activation::Silu:
    return kart::Activation::Silu;
  }
  llvm_unreachable("unknown activation");
}
kart::GeluApproximation toKart(GeluApproximation g) {
  return g == GeluApproximation::Tanh ? kart::GeluApproximation::Tanh
                                      : kart::GeluApproximation::None;
}
kart::RopeStyle toKart(RopeStyle s) {
  return s == RopeStyle::Half ? kart::RopeStyle::Half
                              : kart::RopeStyle::Interleaved;
}
kart::ReduceKind toKart(ReduceKind k) {
  switch (k) {
  case ReduceKind::Sum:
    return kart::ReduceKind::Sum;
  case ReduceKind::Mean:
    return kart::ReduceKind::Mean;
  case ReduceKind::Max:
    return kart::ReduceKind::Max;
  }
  llvm_unreachable("unknown reduction");
}
kart::NormKind toKart(NormKind k) {
  return k == NormKind::RMSNorm ? kart::NormKind::RMSNorm
                                : kart::NormKind::LayerNorm;
}
kart::OptimizerKind toKart(OptimizerKind k) {
  return k == OptimizerKind::SGD ? kart::OptimizerKind::SGD
                                 : kart::OptimizerKind::AdamW;
}

/// Operand ids in ODS order, -1 for each empty optional segment.
std::vector<int> operandIds(Operation *op,
                            llvm::function_ref<int(Value)> idOf) {
  std::vector<int> ids;
  auto segments = llvm::dyn_cast_or_null<DenseI32ArrayAttr>(
      op->getInherentAttr("operandSegmentSizes").value_or(Attribute()));
  if (!segments) {
    for (Value v : op->getOperands())
      ids.push_back(idOf(v));
    return ids;
  }
  unsigned at = 0;
  for (int32_t size : segments.asArrayRef()) {
    if (size == 0)
      ids.push_back(-1);
    for (int32_t i = 0; i < size; ++i)
      ids.push_back(idOf(op->getOperand(at++)));
  }
  return ids;
}

/// The body of a kiln.fused_elementwise as an ElementwiseProgram: registers
/// are the block arguments, then the scalar constants, then one per
/// instruction.
FailureOr<fb::Offset<kart::ElementwiseProgram>>
encodeProgram(FusedElementwiseOp f, fb::FlatBufferBuilder &fbb) {
  Block &body = f.getBody().front();
  llvm::DenseMap<Value, int> reg;
  for (BlockArgument a : body.getArguments())
    reg[a] = a.getArgNumber();
  int next = body.getNumArguments();
  std::vector<double> constants;
  for (auto c : body.getOps<ConstantOp>()) {
    auto attr = llvm::dyn_cast<DenseElementsAttr>(c.getValue());
    if (!attr || !attr.isSplat())
      return c.emitError("a fused body takes scalar constants only");
    constants.push_back(attr.getSplatValue<APFloat>().convertToDouble());
    reg[c.getResult()] = next++;
  }
  std::vector<kart::Instruction> code;
  // Each instruction is encoded as a kernel to find its runtime op; the
  // attribute tables that builds are dropped (the variant carries them).
  fb::FlatBufferBuilder scratch(256);
  for (Operation &op : body) {
    if (llvm::isa<ConstantOp>(op))
      continue;
    if (auto y = llvm::dyn_cast<YieldOp>(op))
      return kart::CreateElementwiseProgramDirect(fbb, &code, &constants,
                                                  reg.at(y.getValue()));
    int8_t variant = 0;
    if (auto g = llvm::dyn_cast<GeluOp>(op))
      variant = static_cast<int8_t>(toKart(g.getApproximate()));
    else if (auto a = llvm::dyn_cast<ActivationGradOp>(op))
      variant = static_cast<int8_t>(toKart(a.getKind()));
    scratch.Clear();
    auto inner = encodeKernel(
        &op, scratch,
        [](Attribute, Location loc) -> FailureOr<fb::Offset<kart::Dim>> {
          return emitError(loc, "a fused body has no shapes");
        },
        [&](Value v) { return reg.at(v); });
    if (failed(inner))
      return failure();
    if (!runtime::opInfo(inner->op).has(runtime::kFusible))
      return op.emitError("cannot run '")
             << op.getName() << "' in a fused elementwise body";
    int b = inner->inputs.size() > 1 ? inner->inputs[1] : -1;
    code.emplace_back(inner->op, variant, inner->inputs[0], b);
    reg[op.getResult(0)] = next++;
  }
  return f.emitError("fused body has no kiln.yield");
}

template <typename T> fb::Offset<void> erase(fb::Offset<T> o) {
  return o.Union();
}

} // namespace

FailureOr<EncodedKernel>
kiln::encodeKernel(Operation *op, fb::FlatBufferBuilder &fbb, DimEncoder dim,
                   llvm::function_ref<int(Value)> idOf) {
  using kart::Attrs;
  using kart::Op;
  EncodedKernel k;
  auto set = [&](Op code, Attrs type = Attrs::NONE,
                 fb::Offset<void> attrs = {}) {
    k.op = code;
    k.attrsType = type;
    k.attrs = attrs;
    return success();
  };
  Location loc = op->getLoc();
  LogicalResult mapped =
      llvm::TypeSwitch<Operation *, LogicalResult>(op)
          .Case([&](EmbeddingOp) { return set(Op::Embedding); })
          .Case([&](MatmulOp m) {
            return set(Op::Matmul, Attrs::MatmulAttrs,
                       erase(kart::CreateMatmulAttrs(fbb, m.getTransposeA(),
                                                     m.getTransposeB())));
          })
          .Case([&](AddOp) { return set(Op::Add); })
          .Case([&](SubOp) { return set(Op::Sub); })
          .Case([&](MulOp) { return set(Op::Mul); })
          .Case([&](DivOp) { return set(Op::Div); })
          .Case([&](MaxOp) { return set(Op::Max); })
          .Case([&](MinOp) { return set(Op::Min); })
          .Case([&](PowOp) { return set(Op::Pow); })
          .Case([&](NegOp) { return set(Op::Neg); })
          .Case([&](ExpOp) { return set(Op::Exp); })
          .Case([&](LogOp) { return set(Op::Log); })
          .Case([&](SqrtOp) { return set(Op::Sqrt); })
          .Case([&](RsqrtOp) { return set(Op::Rsqrt); })
          .Case([&](TanhOp) { return set(Op::Tanh); })
          .Case([&](SigmoidOp) { return set(Op::Sigmoid); })
          .Case([&](ReluOp) { return set(Op::Relu); })
          .Case([&](SiluOp) { return set(Op::Silu); })
          .Case([&](GeluOp g) {
            return set(
                Op::Gelu, Attrs::GeluAttrs,
                erase(kart::CreateGeluAttrs(fbb, toKart(g.getApproximate()))));
          })
          .Case([&](CastOp) { return set(Op::Cast); })
          .Case([&](ReshapeOp r) -> LogicalResult {
            std::vector<fb::Offset<kart::Dim>> dims;
            for (Attribute a : r.getShape()) {
              auto d = dim(a, loc);
              if (failed(d))
                return failure();
              dims.push_back(*d);
            }
            return set(Op::Reshape, Attrs::ReshapeAttrs,
                       erase(kart::CreateReshapeAttrsDirect(fbb, &dims)));
          })
          .Case([&](TransposeOp t) {
            std::vector<int64_t> perm(t.getPerm().begin(), t.getPerm().end());
            return set(Op::Transpose, Attrs::TransposeAttrs,
                       erase(kart::CreateTransposeAttrsDirect(fbb, &perm)));
          })
          .Case([&](SliceOp s) -> LogicalResult {
            auto end = dim(s.getEnd(), loc);
            if (failed(end))
              return failure();
            return set(Op::Slice, Attrs::SliceAttrs,
                       erase(kart::CreateSliceAttrs(fbb, s.getAxis(),
                                                    s.getStart(), *end)));
          })
          .Case([&](ConcatOp c) {
            return set(Op::Concat, Attrs::AxisAttrs,
                       erase(kart::CreateAxisAttrs(fbb, c.getAxis())));
          })
          .Case([&](SplitOp s) {
            return set(Op::Split, Attrs::AxisAttrs,
                       erase(kart::CreateAxisAttrs(fbb, s.getAxis())));
          })
          .Case<ReduceSumOp, ReduceMeanOp, ReduceMaxOp>([&](auto r) {
            Op code = llvm::isa<ReduceSumOp>(op)    ? Op::ReduceSum
                      : llvm::isa<ReduceMeanOp>(op) ? Op::ReduceMean
                                                    : Op::ReduceMax;
            std::vector<int64_t> axes(r.getAxes().begin(), r.getAxes().end());
            return set(code, Attrs::ReduceAttrs,
                       erase(kart::CreateReduceAttrsDirect(fbb, r.getKeepdim(),
                                                           &axes)));
          })
          .Case<LayerNormOp, RMSNormOp>([&](auto l) {
            return set(llvm::isa<LayerNormOp>(op) ? Op::LayerNorm : Op::RMSNorm,
                       Attrs::NormAttrs,
                       erase(kart::CreateNormAttrs(
                           fbb, l.getEps().convertToDouble())));
          })
          .Case([&](SoftmaxOp s) {
            return set(Op::Softmax, Attrs::AxisAttrs,
                       erase(kart::CreateAxisAttrs(fbb, s.getAxis())));
          })
          .Case([&](DropoutOp d) {
            return set(Op::Dropout, Attrs::DropoutAttrs,
                       erase(kart::CreateDropoutAttrs(
                           fbb, d.getSeed(), d.getRate().convertToDouble())));
          })
          .Case([&](RopeOp r) {
            return set(Op::Rope, Attrs::RopeAttrs,
                       erase(kart::CreateRopeAttrs(
                           fbb, r.getHeadDim(), r.getTheta().convertToDouble(),
                           toKart(r.getStyle()), r.getInverse())));
          })
          .Case<AttentionOp, AttentionGradOp>([&](auto a) {
            return set(llvm::isa<AttentionOp>(op) ? Op::Attention
                                                  : Op::AttentionGrad,
                       Attrs::AttentionAttrs,
                       erase(attentionAttrs(fbb, a, patternOf(a))));
          })
          .Case([&](CachedAttentionOp a) {
            runtime::attention::PatternSpec ps;
            ps.causal = true;
            if (int64_t w = static_cast<int64_t>(a.getWindow()); w > 0) {
              ps.kind = runtime::attention::PatternKind::SlidingWindow;
              ps.window = w;
            }
            fb::Offset<kart::RelativePositionBucketAttrs> relative = 0;
            if (a.getRelativeBias())
              relative = kart::CreateRelativePositionBucketAttrs(
                  fbb, a.getRelativeBidirectional(), a.getRelativeBuckets(),
                  a.getRelativeMaxDistance());
            return set(Op::CachedAttention, Attrs::AttentionAttrs,
                       erase(attentionAttrs(fbb, a, ps, relative)));
          })
          .Case([&](RelativePositionBucketOp r) {
            return set(Op::RelativePositionBucket,
                       Attrs::RelativePositionBucketAttrs,
                       erase(kart::CreateRelativePositionBucketAttrs(
                           fbb, r.getBidirectional(), r.getNumBuckets(),
                           r.getMaxDistance())));
          })
          .Case<CrossEntropyOp, CrossEntropyGradOp, SoftmaxCrossEntropyOp>(
              [&](auto c) {
                Op code = llvm::isa<CrossEntropyOp>(op) ? Op::CrossEntropy
                          : llvm::isa<CrossEntropyGradOp>(op)
                              ? Op::CrossEntropyGrad
                              : Op::SoftmaxCrossEntropy;
                return set(code, Attrs::CrossEntropyAttrs,
                           erase(kart::CreateCrossEntropyAttrs(
                               fbb, c.getIgnoreIndex())));
              })
          .Case([&](GlobalNormOp) { return set(Op::GlobalNorm); })
          .Case([&](OptimizerUpdateOp u) {
            return set(
                Op::OptimizerUpdate, Attrs::OptimizerAttrs,
                erase(kart::CreateOptimizerAttrs(
                    fbb, toKart(u.getKind()), u.getBeta1().convertToDouble(),
                    u.getBeta2().convertToDouble(),
                    u.getEps().convertToDouble(),
                    u.getWeightDecay().convertToDouble(),
                    u.getMomentum().convertToDouble(),
                    u.getMaxNorm().convertToDouble())));
          })
          .Case([&](EmbeddingGradOp e) {
            return set(Op::EmbeddingGrad, Attrs::EmbeddingGradAttrs,
                       erase(kart::CreateEmbeddingGradAttrs(
                           fbb, e.getNumEmbeddings())));
          })
          .Case([&](ActivationGradOp a) {
            return set(Op::ActivationGrad, Attrs::ActivationGradAttrs,
                       erase(kart::CreateActivationGradAttrs(
                           fbb, toKart(a.getKind()))));
          })
          .Case([&](SliceGradOp s) {
            return set(Op::SliceGrad, Attrs::SliceGradAttrs,
                       erase(kart::CreateSliceGradAttrs(fbb, s.getAxis(),
                                                        s.getStart())));
          })
          .Case([&](ReshapeLikeOp) { return set(Op::ReshapeLike); })
          .Case([&](ZerosLikeOp) { return set(Op::ZerosLike); })
          .Case([&](ReduceGradOp r) {
            std::vector<int64_t> axes(r.getAxes().begin(), r.getAxes().end());
            return set(Op::ReduceGrad, Attrs::ReduceGradAttrs,
                       erase(kart::CreateReduceGradAttrsDirect(
                           fbb, toKart(r.getKind()), r.getKeepdim(), &axes)));
          })
          .Case([&](ConcatGradOp c) {
            return set(Op::ConcatGrad, Attrs::AxisAttrs,
                       erase(kart::CreateAxisAttrs(fbb, c.getAxis())));
          })
          .Case([&](FusedMatmulOp m) {
            return set(Op::FusedMatmul, Attrs::FusedMatmulAttrs,
                       erase(kart::CreateFusedMatmulAttrs(
                           fbb, m.getTransposeA(), m.getTransposeB(),
                           m.getReduceBatch(), m.getScale().convertToDouble(),
                           toKart(m.getActivation()))));
          })
          .Case<AddNormOp, NormGradOp>([&](auto n) {
            return set(
                llvm::isa<AddNormOp>(op) ? Op::AddNorm : Op::NormGrad,
                Attrs::FusedNormAttrs,
                erase(kart::CreateFusedNormAttrs(
                    fbb, toKart(n.getKind()), n.getEps().convertToDouble())));
          })
          .Case([&](FusedElementwiseOp f) -> LogicalResult {
            auto program = encodeProgram(f, fbb);
            if (failed(program))
              return failure();
            return set(Op::FusedElementwise, Attrs::ElementwiseProgram,
                       erase(*program));
          })
          .Default([&](Operation *o) {
            return o->emitError("the CPU backend cannot lower '")
                   << o->getName() << "'";
          });
  if (failed(mapped))
    return failure();
  k.inputs = operandIds(op, idOf);
  // A single trailing optional operand has no segment sizes: absent, it is
  // simply missing.
  const runtime::OpInfo &row = runtime::opInfo(k.op);
  while (row.inputs.max >= 0 &&
         k.inputs.size() < static_cast<size_t>(row.inputs.max) &&
         row.optional(k.inputs.size()))
    k.inputs.push_back(-1);

  // The runtime's row for the op must admit what was written.
  bool ok = row.inputs.admits(k.inputs.size()) &&
            row.outputs.admits(op->getNumResults()) && row.attrs == k.attrsType;
  for (size_t i = 0; ok && i < k.inputs.size(); ++i)
    ok = k.inputs[i] != -1 || row.optional(i);
  if (!ok)
    return op->emitError("internal error: '")
           << op->getName() << "' does not match the runtime's '"
           << kart::EnumNameOp(k.op) << "' (runtime/core/OpTable.cpp)";
  return k;
}
