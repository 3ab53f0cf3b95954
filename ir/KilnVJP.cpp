//===- KilnVJP.cpp - vector-Jacobian products of kiln ops -----------------===//
//
// The rules of reverse-mode autodiff, one per op, side by side. Each builds
// the gradient of every operand from the gradient of the result with ordinary
// kiln ops, so the backward pass is IR like the forward pass and goes through
// the same verifiers, lowering and kernels. Broadcasting operands get their
// gradient summed back to their own shape.
//
//===----------------------------------------------------------------------===//
#include "ir/KilnOps.h"
#include "ir/ShapeUtils.h"

#include "mlir/IR/Builders.h"

using namespace mlir;
using namespace kiln;

namespace {

RankedTensorType typeOf(Value v) {
  return llvm::cast<RankedTensorType>(v.getType());
}

Value scalar(OpBuilder &b, Location loc, Type elt, double v) {
  auto type = RankedTensorType::get({}, elt);
  return b.create<ConstantOp>(
      loc, type,
      llvm::cast<ElementsAttr>(DenseElementsAttr::get(
          type, b.getFloatAttr(llvm::cast<FloatType>(elt), v))));
}

/// The gradient `g` of a broadcast result, summed back to the shape of the
/// operand `like`: over the leading dimensions `like` lacks, and over those
/// where `like` has size 1 and `g` does not.
Value sumToShape(OpBuilder &b, Location loc, Value g, Value like) {
  auto gt = typeOf(g), lt = typeOf(like);
  int64_t lead = gt.getRank() - lt.getRank();
  if (lead > 0) {
    SmallVector<int64_t> axes;
    for (int64_t i = 0; i < lead; ++i)
      axes.push_back(i);
    SmallVector<int64_t> shape(gt.getShape().drop_front(lead));
    g = b.create<ReduceSumOp>(
        loc, RankedTensorType::get(shape, gt.getElementType()), g,
        b.getDenseI64ArrayAttr(axes), b.getBoolAttr(false));
    gt = typeOf(g);
  }
  SmallVector<int64_t> ones;
  for (int64_t i = 0; i < lt.getRank(); ++i)
    if (lt.getDimSize(i) == 1 && gt.getDimSize(i) != 1)
      ones.push_back(i);
  if (!ones.empty()) {
    SmallVector<int64_t> shape(gt.getShape());
    for (int64_t i : ones)
      shape[i] = 1;
    g = b.create<ReduceSumOp>(
        loc, RankedTensorType::get(shape, gt.getElementType()), g,
        b.getDenseI64ArrayAttr(ones), b.getBoolAttr(true));
  }
  return g;
}

template <typename Op>
Value binary(OpBuilder &b, Location loc, Value x, Value y) {
  SmallVector<Type> t;
  (void)Op::inferReturnTypes(b.getContext(), loc, ValueRange{x, y}, nullptr,
                             nullptr, {}, t);
  return b.create<Op>(loc, t.front(), x, y);
}

Value matmul(OpBuilder &b, Location loc, Value x, Value y, bool ta, bool tb) {
  SmallVector<Type> t;
  MatmulOp::Properties props;
  props.transpose_a = b.getBoolAttr(ta);
  props.transpose_b = b.getBoolAttr(tb);
  (void)MatmulOp::inferReturnTypes(b.getContext(), loc, ValueRange{x, y},
                                   nullptr, OpaqueProperties(&props), {}, t);
  return b.create<MatmulOp>(loc, t.front(), x, y, b.getBoolAttr(ta),
                            b.getBoolAttr(tb));
}

} // namespace

// d(a + b) = (g, g);  d(a - b) = (g, -g)
LogicalResult AddOp::buildVJP(OpBuilder &b, ValueRange grads,
                              SmallVectorImpl<Value> &out) {
  Value g = grads[0];
  out.push_back(sumToShape(b, getLoc(), g, getLhs()));
  out.push_back(sumToShape(b, getLoc(), g, getRhs()));
  return success();
}

LogicalResult SubOp::buildVJP(OpBuilder &b, ValueRange grads,
                              SmallVectorImpl<Value> &out) {
  Value g = grads[0];
  out.push_back(sumToShape(b, getLoc(), g, getLhs()));
  Value neg = b.create<NegOp>(getLoc(), g.getType(), g);
  out.push_back(sumToShape(b, getLoc(), neg, getRhs()));
  return success();
}

// d(a * b) = (g * b, g * a)
LogicalResult MulOp::buildVJP(OpBuilder &b, ValueRange grads,
                              SmallVectorImpl<Value> &out) {
  Value g = grads[0];
  Location loc = getLoc();
  out.push_back(
      sumToShape(b, loc, binary<MulOp>(b, loc, g, getRhs()), getLhs()));
  out.push_back(
      sumToShape(b, loc, binary<MulOp>(b, loc, g, getLhs()), getRhs()));
  return success();
}

// d(a / b) = (g / b, -g * a / b^2)
LogicalResult DivOp::buildVJP(OpBuilder &b, ValueRange grads,
                              SmallVectorImpl<Value> &out) {
  Value g = grads[0];
  Location loc = getLoc();
  Value ga = binary<DivOp>(b, loc, g, getRhs());
  out.push_back(sumToShape(b, loc, ga, getLhs()));
  Value q = binary<DivOp>(b, loc, getResult(), getRhs()); // a / b^2
  Value gb = binary<MulOp>(b, loc, g, q);
  gb = b.create<NegOp>(loc, gb.getType(), gb);
  out.push_back(sumToShape(b, loc, gb, getRhs()));
  return success();
}

// d(-x) = -g
LogicalResult NegOp::buildVJP(OpBuilder &b, ValueRange grads,
                              SmallVectorImpl<Value> &out) {
  out.push_back(b.create<NegOp>(getLoc(), grads[0].getType(), grads[0]));
  return success();
}

// d(exp x) = g * exp x
LogicalResult ExpOp::buildVJP(OpBuilder &b, ValueRange grads,
                              SmallVectorImpl<Value> &out) {
  out.push_back(binary<MulOp>(b, getLoc(), grads[0], getResult()));
  return success();
}

// d(tanh x) = g * (1 - y^2)
LogicalResult TanhOp::buildVJP(OpBuilder &b, ValueRange grads,
                               SmallVectorImpl<Value> &out) {
  Location loc = getLoc();
  Value y = getResult();
  Value one = scalar(b, loc, typeOf(y).getElementType(), 1.0);
  Value d = binary<SubOp>(b, loc, one, binary<MulOp>(b, loc, y, y));
  out.push_back(binary<MulOp>(b, loc, grads[0], d));
  return success();
}

// d(sigmoid x) = g * y * (1 - y)
LogicalResult SigmoidOp::buildVJP(OpBuilder &b, ValueRange grads,
                                  SmallVectorImpl<Value> &out) {
  Location loc = getLoc();
  Value y = getResult();
  Value one = scalar(b, loc, typeOf(y).getElementType(), 1.0);
  Value d = binary<MulOp>(b, loc, y, binary<SubOp>(b, loc, one, y));
  out.push_back(binary<MulOp>(b, loc, grads[0], d));
  return success();
}

// y = op(A) op(B): the gradients are matmuls with the flags chosen so that
// each lands in its operand's stored layout; broadcast batches are summed.
LogicalResult MatmulOp::buildVJP(OpBuilder &b, ValueRange grads,
                                 SmallVectorImpl<Value> &out) {
  Location loc = getLoc();
  Value g = grads[0], A = getLhs(), B = getRhs();
  bool ta = getTransposeA(), tb = getTransposeB();
  Value dA =
      ta ? matmul(b, loc, B, g, tb, true) : matmul(b, loc, g, B, false, !tb);
  Value dB =
      tb ? matmul(b, loc, g, A, true, ta) : matmul(b, loc, A, g, !ta, false);
  out.push_back(sumToShape(b, loc, dA, A));
  out.push_back(sumToShape(b, loc, dB, B));
  return success();
}

// The inverse permutation.
LogicalResult TransposeOp::buildVJP(OpBuilder &b, ValueRange grads,
                                    SmallVectorImpl<Value> &out) {
  ArrayRef<int64_t> perm = getPerm();
  SmallVector<int64_t> inv(perm.size());
  for (size_t i = 0; i < perm.size(); ++i)
    inv[perm[i]] = i;
  out.push_back(b.create<TransposeOp>(getLoc(), getInput().getType(), grads[0],
                                      b.getDenseI64ArrayAttr(inv)));
  return success();
}

// Only the logits get a gradient; the targets are data.
LogicalResult CrossEntropyOp::buildVJP(OpBuilder &b, ValueRange grads,
                                       SmallVectorImpl<Value> &out) {
  out.push_back(b.create<CrossEntropyGradOp>(getLoc(), getLogits().getType(),
                                             getLogits(), getTargets(),
                                             grads[0], getIgnoreIndexAttr()));
  out.push_back(Value());
  return success();
}

// d(log x) = g / x
LogicalResult LogOp::buildVJP(OpBuilder &b, ValueRange grads,
                              SmallVectorImpl<Value> &out) {
  out.push_back(binary<DivOp>(b, getLoc(), grads[0], getInput()));
  return success();
}

// d(sqrt x) = g / (2 y)
LogicalResult SqrtOp::buildVJP(OpBuilder &b, ValueRange grads,
                               SmallVectorImpl<Value> &out) {
  Location loc = getLoc();
  Value y = getResult();
  Value two = scalar(b, loc, typeOf(y).getElementType(), 2.0);
  out.push_back(binary<DivOp>(b, loc, grads[0], binary<MulOp>(b, loc, two, y)));
  return success();
}

// d(x^-1/2) = -g y^3 / 2
LogicalResult RsqrtOp::buildVJP(OpBuilder &b, ValueRange grads,
                                SmallVectorImpl<Value> &out) {
  Location loc = getLoc();
  Value y = getResult();
  Value half = scalar(b, loc, typeOf(y).getElementType(), -0.5);
  Value y3 = binary<MulOp>(b, loc, y, binary<MulOp>(b, loc, y, y));
  out.push_back(
      binary<MulOp>(b, loc, grads[0], binary<MulOp>(b, loc, half, y3)));
  return success();
}

// silu, relu and both GELUs: one fused kiln.activation_grad.
LogicalResult SiluOp::buildVJP(OpBuilder &b, ValueRange grads,
                               SmallVectorImpl<Value> &out) {
  out.push_back(b.create<ActivationGradOp>(getLoc(), getType(), grads[0],
                                           getInput(), Activation::Silu));
  return success();
}

LogicalResult ReluOp::buildVJP(OpBuilder &b, ValueRange grads,
                               SmallVectorImpl<Value> &out) {
  out.push_back(b.create<ActivationGradOp>(getLoc(), getType(), grads[0],
                                           getInput(), Activation::Relu));
  return success();
}

// d(a^b) = (g b a^(b-1), g y log a)
LogicalResult PowOp::buildVJP(OpBuilder &b, ValueRange grads,
                              SmallVectorImpl<Value> &out) {
  Location loc = getLoc();
  Value g = grads[0], a = getLhs(), e = getRhs(), y = getResult();
  Value one = scalar(b, loc, typeOf(a).getElementType(), 1.0);
  Value da =
      binary<MulOp>(b, loc, binary<MulOp>(b, loc, g, e),
                    binary<PowOp>(b, loc, a, binary<SubOp>(b, loc, e, one)));
  out.push_back(sumToShape(b, loc, da, a));
  Value logA = b.create<LogOp>(loc, a.getType(), a);
  Value de = binary<MulOp>(b, loc, binary<MulOp>(b, loc, g, y), logA);
  out.push_back(sumToShape(b, loc, de, e));
  return success();
}

// d(softmax x) = y * (g - sum(g * y, axis))
LogicalResult SoftmaxOp::buildVJP(OpBuilder &b, ValueRange grads,
                                  SmallVectorImpl<Value> &out) {
  Location loc = getLoc();
  Value y = getResult();
  Value gy = binary<MulOp>(b, loc, grads[0], y);
  auto t = typeOf(gy);
  int64_t axis = static_cast<int64_t>(getAxis());
  if (axis < 0)
    axis += t.getRank();
  SmallVector<int64_t> shape(t.getShape());
  shape[axis] = 1;
  Value sum = b.create<ReduceSumOp>(
      loc, RankedTensorType::get(shape, t.getElementType()), gy,
      b.getDenseI64ArrayAttr({axis}), b.getBoolAttr(true));
  out.push_back(binary<MulOp>(b, loc, y, binary<SubOp>(b, loc, grads[0], sum)));
  return success();
}

// Normalization backward is one fused kernel (kiln.norm_grad): with
// xh = (x - mean) * r, r = 1 / sqrt(var + eps) and gw = g * w,
//   layernorm: dx = r * (gw - mean(gw) - xh * mean(gw * xh)),
//   rmsnorm:   dx = r * gw - x * r^3 * mean(gw * x),
// and dw = sum(g * xh), db = sum(g) over every row.
static void normVJP(OpBuilder &b, Operation *op, Value g, Value x, Value w,
                    NormKind kind, APFloat eps, SmallVectorImpl<Value> &out) {
  auto grad = b.create<NormGradOp>(
      op->getLoc(), TypeRange{x.getType(), w.getType(), w.getType()}, g, x, w,
      NormKindAttr::get(b.getContext(), kind),
      b.getF64FloatAttr(eps.convertToDouble()));
  out.push_back(grad.getInputGrad());
  out.push_back(grad.getWeightGrad());
  if (kind == NormKind::LayerNorm)
    out.push_back(grad.getBiasGrad());
}

LogicalResult LayerNormOp::buildVJP(OpBuilder &b, ValueRange grads,
                                    SmallVectorImpl<Value> &out) {
  normVJP(b, *this, grads[0], getInput(), getWeight(), NormKind::LayerNorm,
          getEps(), out);
  return success();
}

LogicalResult RMSNormOp::buildVJP(OpBuilder &b, ValueRange grads,
                                  SmallVectorImpl<Value> &out) {
  normVJP(b, *this, grads[0], getInput(), getWeight(), NormKind::RMSNorm,
          getEps(), out);
  return success();
}

LogicalResult GeluOp::buildVJP(OpBuilder &b, ValueRange grads,
                               SmallVectorImpl<Value> &out) {
  out.push_back(b.create<ActivationGradOp>(
      getLoc(), getType(), grads[0], getInput(),
      getApproximate() == GeluApproximation::Tanh ? Activation::GeluTanh
                                                  : Activation::Gelu));
  return success();
}

// Gathered rows scatter their gradients back into the table.
LogicalResult EmbeddingOp::buildVJP(OpBuilder &b, ValueRange grads,
                                    SmallVectorImpl<Value> &out) {
  auto table = typeOf(getTable());
  out.push_back(
      b.create<EmbeddingGradOp>(getLoc(), table, grads[0], getIndices(),
                                b.getI64IntegerAttr(table.getDimSize(0))));
  out.push_back(Value());
  return success();
}

// Shape changes run backwards: the input's shape is read at run time, since
// its dimensions may be symbolic.
LogicalResult ReshapeOp::buildVJP(OpBuilder &b, ValueRange grads,
                                  SmallVectorImpl<Value> &out) {
  out.push_back(b.create<ReshapeLikeOp>(getLoc(), getInput().getType(),
                                        grads[0], getInput()));
  return success();
}

LogicalResult SliceOp::buildVJP(OpBuilder &b, ValueRange grads,
                                SmallVectorImpl<Value> &out) {
  out.push_back(b.create<SliceGradOp>(getLoc(), getInput().getType(), grads[0],
                                      getInput(), getAxisAttr(),
                                      getStartAttr()));
  return success();
}

LogicalResult ConcatOp::buildVJP(OpBuilder &b, ValueRange grads,
                                 SmallVectorImpl<Value> &out) {
  auto pieces = b.create<ConcatGradOp>(getLoc(), getInputs().getTypes(),
                                       grads[0], getInputs(), getAxisAttr());
  for (Value v : pieces.getResults())
    out.push_back(v);
  return success();
}

// Results that do not reach the loss contribute zeros.
LogicalResult SplitOp::buildVJP(OpBuilder &b, ValueRange grads,
                                SmallVectorImpl<Value> &out) {
  SmallVector<Value> parts;
  for (auto [r, g] : llvm::zip(getResults(), grads))
    parts.push_back(
        g ? g : b.create<ZerosLikeOp>(getLoc(), r.getType(), r).getResult());
  out.push_back(
      b.create<ConcatOp>(getLoc(), getInput().getType(), parts, getAxisAttr()));
  return success();
}

// Casting between float types casts the gradient back; integer inputs get
// none.
LogicalResult CastOp::buildVJP(OpBuilder &b, ValueRange grads,
                               SmallVectorImpl<Value> &out) {
  auto in = typeOf(getInput());
  if (!llvm::isa<FloatType>(in.getElementType()) ||
      !llvm::isa<FloatType>(typeOf(getResult()).getElementType())) {
    out.push_back(Value());
    return success();
  }
  out.push_back(b.create<CastOp>(getLoc(), in, grads[0]));
  return success();
}

namespace {
LogicalResult reduceVJP(Operation *op, OpBuilder &b, Value g, Value x,
                        ReduceKind kind, DenseI64ArrayAttr axes, BoolAttr keep,
                        SmallVectorImpl<Value> &out) {
  out.push_back(b.create<ReduceGradOp>(
      op->getLoc(), x.getType(), g, x,
      ReduceKindAttr::get(b.getContext(), kind), axes, keep));
  return success();
}
} // namespace

LogicalResult ReduceSumOp::buildVJP(OpBuilder &b, ValueRange grads,
                                    SmallVectorImpl<Value> &out) {
  return reduceVJP(*this, b, grads[0], getInput(), ReduceKind::Sum,
                   getAxesAttr(), getKeepdimAttr(), out);
}

LogicalResult ReduceMeanOp::buildVJP(OpBuilder &b, ValueRange grads,
                                     SmallVectorImpl<Value> &out) {
  return reduceVJP(*this, b, grads[0], getInput(), ReduceKind::Mean,
                   getAxesAttr(), getKeepdimAttr(), out);
}

LogicalResult ReduceMaxOp::buildVJP(OpBuilder &b, ValueRange grads,
                                    SmallVectorImpl<Value> &out) {
  return reduceVJP(*this, b, grads[0], getInput(), ReduceKind::Max,
                   getAxesAttr(), getKeepdimAttr(), out);
}

// The mask is a function of the seed, the step and the element index, so the
// same dropout applied to the gradient multiplies by the same mask.
LogicalResult DropoutOp::buildVJP(OpBuilder &b, ValueRange grads,
                                  SmallVectorImpl<Value> &out) {
  out.push_back(b.create<DropoutOp>(getLoc(), grads[0].getType(), grads[0],
                                    getRateAttr(), getSeedAttr()));
  return success();
}

// A rotation's transpose is the rotation by the negated angles.
LogicalResult RopeOp::buildVJP(OpBuilder &b, ValueRange grads,
                               SmallVectorImpl<Value> &out) {
  out.push_back(b.create<RopeOp>(getLoc(), getInput().getType(), grads[0],
                                 getPositions(), getHeadDimAttr(),
                                 getThetaAttr(), getStyleAttr(),
                                 b.getBoolAttr(!getInverse())));
  if (getPositions())
    out.push_back(Value());
  return success();
}

// The fused backward reads the log-sum-exp that kiln-autodiff asks the
// forward op to save (`save_lse`).
LogicalResult AttentionOp::buildVJP(OpBuilder &b, ValueRange grads,
                                    SmallVectorImpl<Value> &out) {
  if (!getLse())
    return emitOpError("kiln-autodiff: attention must save its log-sum-exp "
                       "(save_lse) to be differentiated");
  Value g = grads[0];
  if (!g) // only lse reached the loss, which kiln never does itself
    return emitOpError("kiln-autodiff: no gradient rule for the saved "
                       "log-sum-exp");
  Value bias = getBias();
  auto op = b.create<AttentionGradOp>(
      getLoc(), getQuery().getType(), getKey().getType(), getValue().getType(),
      bias ? bias.getType() : Type(), g, getQuery(), getKey(), getValue(),
      getResult(), getLse(), getMask(), bias, getNumHeadsAttr(),
      getNumKvHeadsAttr(), getScaleAttr(), getCausalAttr(), getPatternAttr());
  out.push_back(op.getQueryGrad());
  out.push_back(op.getKeyGrad());
  out.push_back(op.getValueGrad());
  if (getMask())
    out.push_back(Value());
  if (bias)
    out.push_back(op.getBiasGrad());
  return success();
}
