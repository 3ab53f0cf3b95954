//===- KilnOps.cpp - verifiers and shape inference for kiln ops -----------===//
//
// Shape inference doubles as verification: InferTypeOpInterface runs
// inferReturnTypes when an op is verified, so each rule below both computes
// the result type and reports, precisely, why operands do not fit.
//
//===----------------------------------------------------------------------===//
#include "ir/KilnOps.h"
#include "ir/ShapeUtils.h"
#include "runtime/quant/QuantSpec.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/PatternMatch.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallSet.h"

using namespace mlir;
using namespace kiln;

namespace {

/// Collects an error message and emits it at the op's location, prefixed the
/// way MLIR prefixes op errors, so inference and verifier messages read alike.
class Failure {
public:
  Failure(std::optional<Location> loc, StringRef opName)
      : loc(loc), opName(opName) {}
  template <typename... Args> LogicalResult operator()(Args &&...args) {
    return emitOptionalError(loc, "'", opName, "' op ",
                             std::forward<Args>(args)...);
  }

private:
  std::optional<Location> loc;
  StringRef opName;
};

RankedTensorType ranked(Value v) {
  return llvm::cast<RankedTensorType>(v.getType());
}

std::string str(ArrayRef<int64_t> shape) { return shapeToString(shape); }

/// A type in quotes, as MLIR's diagnostics print types.
std::string str(Type t) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << "'";
  t.print(os);
  os << "'";
  return s;
}

std::string dimStr(int64_t d) {
  return ShapedType::isDynamic(d) ? std::string("?") : std::to_string(d);
}

bool compatibleTypes(TypeRange l, TypeRange r) {
  if (l.size() != r.size())
    return false;
  for (auto [a, b] : llvm::zip(l, r)) {
    auto ta = llvm::dyn_cast<RankedTensorType>(a);
    auto tb = llvm::dyn_cast<RankedTensorType>(b);
    if (!ta || !tb) {
      if (a != b)
        return false;
      continue;
    }
    if (ta.getElementType() != tb.getElementType() ||
        ta.getRank() != tb.getRank())
      return false;
    for (auto [da, db] : llvm::zip(ta.getShape(), tb.getShape()))
      if (!compatibleDims(da, db))
        return false;
  }
  return true;
}

} // namespace

// Every op with inferred types accepts a declared type that is at least as
// static as the inferred one.
#define KILN_COMPATIBLE_RETURN_TYPES(Op)                                       \
  bool Op::isCompatibleReturnTypes(TypeRange l, TypeRange r) {                 \
    return compatibleTypes(l, r);                                              \
  }
KILN_COMPATIBLE_RETURN_TYPES(EmbeddingOp)
KILN_COMPATIBLE_RETURN_TYPES(MatmulOp)
KILN_COMPATIBLE_RETURN_TYPES(AddOp)
KILN_COMPATIBLE_RETURN_TYPES(SubOp)
KILN_COMPATIBLE_RETURN_TYPES(MulOp)
KILN_COMPATIBLE_RETURN_TYPES(DivOp)
KILN_COMPATIBLE_RETURN_TYPES(MaxOp)
KILN_COMPATIBLE_RETURN_TYPES(MinOp)
KILN_COMPATIBLE_RETURN_TYPES(PowOp)
KILN_COMPATIBLE_RETURN_TYPES(ReshapeOp)
KILN_COMPATIBLE_RETURN_TYPES(TransposeOp)
KILN_COMPATIBLE_RETURN_TYPES(SliceOp)
KILN_COMPATIBLE_RETURN_TYPES(ConcatOp)
KILN_COMPATIBLE_RETURN_TYPES(ReduceSumOp)
KILN_COMPATIBLE_RETURN_TYPES(ReduceMeanOp)
KILN_COMPATIBLE_RETURN_TYPES(ReduceMaxOp)
KILN_COMPATIBLE_RETURN_TYPES(LayerNormOp)
KILN_COMPATIBLE_RETURN_TYPES(RMSNormOp)
KILN_COMPATIBLE_RETURN_TYPES(AttentionOp)
KILN_COMPATIBLE_RETURN_TYPES(RelativePositionBucketOp)
KILN_COMPATIBLE_RETURN_TYPES(CrossEntropyOp)
KILN_COMPATIBLE_RETURN_TYPES(RopeOp)
KILN_COMPATIBLE_RETURN_TYPES(CrossEntropyGradOp)
KILN_COMPATIBLE_RETURN_TYPES(EmbeddingGradOp)
KILN_COMPATIBLE_RETURN_TYPES(FusedMatmulOp)
KILN_COMPATIBLE_RETURN_TYPES(AddNormOp)
KILN_COMPATIBLE_RETURN_TYPES(NormGradOp)
KILN_COMPATIBLE_RETURN_TYPES(SoftmaxCrossEntropyOp)
#undef KILN_COMPATIBLE_RETURN_TYPES

//===----------------------------------------------------------------------===//
// Parameters and constants
//===----------------------------------------------------------------------===//

LogicalResult ParameterOp::verify() {
  auto type = llvm::cast<RankedTensorType>(getType());
  if (!type.hasStaticShape())
    return emitOpError("parameter '")
           << getSymName() << "' must have a static shape, got " << type;
  StringRef init = getInit();
  ArrayRef<double> args = getInitArgs();
  size_t want;
  if (init == "zeros" || init == "ones")
    want = 0;
  else if (init == "normal" || init == "constant")
    want = 1;
  else if (init == "uniform")
    want = 2;
  else
    return emitOpError("unknown initializer '")
           << init << "'; expected zeros, ones, normal, uniform or constant";
  if (args.size() != want)
    return emitOpError("initializer '")
           << init << "' takes " << want << " argument(s), got " << args.size();
  bool isFloat = llvm::isa<FloatType>(type.getElementType());
  if ((init == "normal" || init == "uniform") && !isFloat)
    return emitOpError("initializer '")
           << init << "' needs a floating-point parameter, got " << type;
  if (init == "normal" && !(args[0] > 0))
    return emitOpError("normal initializer needs a positive standard "
                       "deviation, got ")
           << args[0];
  if (init == "uniform" && !(args[0] < args[1]))
    return emitOpError("uniform initializer needs low < high, got [")
           << args[0] << ", " << args[1] << "]";
  if (std::optional<StringRef> quant = getQuant()) {
    runtime::quant::QuantSpec spec;
    std::string error;
    if (!runtime::quant::parseQuantSpec(quant->str(), spec, error))
      return emitOpError("parameter '")
             << getSymName() << "' has quant = \"" << *quant << "\": " << error;
    if (!type.getElementType().isF32())
      return emitOpError("parameter '")
             << getSymName() << "' is quantized from f32 weights, not " << type;
    if (!getFrozen())
      return emitOpError("parameter '")
             << getSymName()
             << "' is quantized but not frozen; quantized weights are not "
                "trained (train adapters beside them)";
    if (spec.format != runtime::quant::Format::NF4 && type.getRank() != 2)
      return emitOpError("parameter '")
             << getSymName() << "' is " << type << "; "
             << runtime::quant::formatName(spec.format)
             << " quantizes matrices [out, in]";
  }
  return success();
}

LogicalResult ParamOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  auto param = symbolTable.lookupNearestSymbolFrom<ParameterOp>(getOperation(),
                                                                getNameAttr());
  if (!param)
    return emitOpError("'@")
           << getName() << "' does not name a kiln.parameter in this module";
  if (param.getType() != getType())
    return emitOpError("result type ")
           << getType() << " differs from the declared type " << param.getType()
           << " of parameter '@" << getName() << "'";
  return success();
}

OpFoldResult ConstantOp::fold(FoldAdaptor) { return getValue(); }

//===----------------------------------------------------------------------===//
// Lookup and linear algebra
//===----------------------------------------------------------------------===//

LogicalResult EmbeddingOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &results) {
  Failure fail(loc, getOperationName());
  auto table = ranked(adaptor.getTable());
  auto idx = ranked(adaptor.getIndices());
  if (table.getRank() != 2)
    return fail("table must have rank 2 [V, D], got ", str(table));
  SmallVector<int64_t> shape(idx.getShape());
  shape.push_back(table.getDimSize(1));
  results.push_back(RankedTensorType::get(shape, table.getElementType()));
  return success();
}

LogicalResult MatmulOp::inferReturnTypes(MLIRContext *,
                                         std::optional<Location> loc,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &results) {
  Failure fail(loc, getOperationName());
  auto a = ranked(adaptor.getLhs()), b = ranked(adaptor.getRhs());
  if (a.getRank() < 2)
    return fail("lhs must have rank >= 2, got ", str(a));
  if (b.getRank() < 2)
    return fail("rhs must have rank >= 2, got ", str(b));
  if (a.getElementType() != b.getElementType())
    return fail("operand element types differ: ", str(a.getElementType()),
                " vs ", str(b.getElementType()));
  ArrayRef<int64_t> as = a.getShape(), bs = b.getShape();
  bool ta = adaptor.getTransposeA(), tb = adaptor.getTransposeB();
  int64_t m = ta ? as[as.size() - 1] : as[as.size() - 2];
  int64_t ka = ta ? as[as.size() - 2] : as[as.size() - 1];
  int64_t kb = tb ? bs[bs.size() - 1] : bs[bs.size() - 2];
  int64_t n = tb ? bs[bs.size() - 2] : bs[bs.size() - 1];
  if (!compatibleDims(ka, kb))
    return fail("contraction dimensions differ: lhs has K = ", dimStr(ka),
                ", rhs has K = ", dimStr(kb));
  SmallVector<int64_t> batch;
  int64_t bad;
  if (!broadcastShapes(as.drop_back(2), bs.drop_back(2), batch, bad))
    return fail("batch dimensions ", str(as.drop_back(2)), " and ",
                str(bs.drop_back(2)), " are not broadcast-compatible");
  batch.push_back(m);
  batch.push_back(n);
  results.push_back(RankedTensorType::get(batch, a.getElementType()));
  return success();
}

namespace {
/// matmul(transpose(a), b) -> matmul(a, b) with transpose_a flipped (and the
/// same for b), when the transpose only swaps the last two dimensions.
struct FoldTransposeIntoMatmul : OpRewritePattern<MatmulOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MatmulOp op,
                                PatternRewriter &rewriter) const override {
    auto swapsLastTwo = [](Value v) -> TransposeOp {
      auto t = v.getDefiningOp<TransposeOp>();
      if (!t)
        return nullptr;
      ArrayRef<int64_t> perm = t.getPerm();
      int64_t r = perm.size();
      for (int64_t i = 0; i < r - 2; ++i)
        if (perm[i] != i)
          return nullptr;
      return r >= 2 && perm[r - 2] == r - 1 && perm[r - 1] == r - 2 ? t
                                                                    : nullptr;
    };
    TransposeOp ta = swapsLastTwo(op.getLhs()), tb = swapsLastTwo(op.getRhs());
    if (!ta && !tb)
      return failure();
    Value lhs = ta ? ta.getInput() : op.getLhs();
    Value rhs = tb ? tb.getInput() : op.getRhs();
    bool flagA = op.getTransposeA() != static_cast<bool>(ta);
    bool flagB = op.getTransposeB() != static_cast<bool>(tb);
    rewriter.replaceOpWithNewOp<MatmulOp>(op, op.getType(), lhs, rhs,
                                          rewriter.getBoolAttr(flagA),
                                          rewriter.getBoolAttr(flagB));
    return success();
  }
};
} // namespace

void MatmulOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                           MLIRContext *context) {
  results.add<FoldTransposeIntoMatmul>(context);
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

static LogicalResult inferBinary(StringRef opName, std::optional<Location> loc,
                                 Value lhs, Value rhs,
                                 SmallVectorImpl<Type> &results) {
  Failure fail(loc, opName);
  auto a = ranked(lhs), b = ranked(rhs);
  if (a.getElementType() != b.getElementType())
    return fail("operand element types differ: ", str(a.getElementType()),
                " vs ", str(b.getElementType()));
  SmallVector<int64_t> shape;
  int64_t bad;
  if (!broadcastShapes(a.getShape(), b.getShape(), shape, bad))
    return fail("operand shapes ", str(a.getShape()), " and ",
                str(b.getShape()), " are not broadcast-compatible (dimension ",
                -1 - bad, " differs)");
  results.push_back(RankedTensorType::get(shape, a.getElementType()));
  return success();
}

#define KILN_BINARY_INFER(Op)                                                  \
  LogicalResult Op::inferReturnTypes(                                          \
      MLIRContext *, std::optional<Location> loc, Adaptor adaptor,             \
      SmallVectorImpl<Type> &results) {                                        \
    return inferBinary(getOperationName(), loc, adaptor.getLhs(),              \
                       adaptor.getRhs(), results);                             \
  }
KILN_BINARY_INFER(AddOp)
KILN_BINARY_INFER(SubOp)
KILN_BINARY_INFER(MulOp)
KILN_BINARY_INFER(DivOp)
KILN_BINARY_INFER(MaxOp)
KILN_BINARY_INFER(MinOp)
KILN_BINARY_INFER(PowOp)
#undef KILN_BINARY_INFER

LogicalResult CastOp::verify() {
  auto in = ranked(getInput()), out = ranked(getResult());
  if (in.getRank() != out.getRank() ||
      !llvm::all_of(llvm::zip(in.getShape(), out.getShape()), [](auto p) {
        return compatibleDims(std::get<0>(p), std::get<1>(p));
      }))
    return emitOpError("changes the shape from ")
           << str(in.getShape()) << " to " << str(out.getShape())
           << "; a cast only converts the element type";
  return success();
}

//===----------------------------------------------------------------------===//
// Shape manipulation
//===----------------------------------------------------------------------===//

LogicalResult ReshapeOp::inferReturnTypes(MLIRContext *,
                                          std::optional<Location> loc,
                                          Adaptor adaptor,
                                          SmallVectorImpl<Type> &results) {
  Failure fail(loc, getOperationName());
  auto in = ranked(adaptor.getInput());
  SmallVector<int64_t> shape;
  bool allStatic = true;
  int64_t count = 1;
  for (auto [i, attr] : llvm::enumerate(adaptor.getShape())) {
    if (auto n = llvm::dyn_cast<IntegerAttr>(attr)) {
      if (n.getInt() <= 0)
        return fail("shape entry ", i, " must be positive, got ", n.getInt());
      shape.push_back(n.getInt());
      count *= n.getInt();
    } else if (auto s = llvm::dyn_cast<StringAttr>(attr)) {
      std::string why = checkDimExpr(s.getValue());
      if (!why.empty())
        return fail("shape entry ", i, ": ", why);
      shape.push_back(ShapedType::kDynamic);
      allStatic = false;
    } else {
      return fail("shape entry ", i,
                  " must be an integer or a dimension expression string");
    }
  }
  if (allStatic && in.hasStaticShape() && in.getNumElements() != count)
    return fail("changes the element count from ", in.getNumElements(), " to ",
                count);
  results.push_back(RankedTensorType::get(shape, in.getElementType()));
  return success();
}

LogicalResult TransposeOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &results) {
  Failure fail(loc, getOperationName());
  auto in = ranked(adaptor.getInput());
  ArrayRef<int64_t> perm = adaptor.getPerm();
  if (static_cast<int64_t>(perm.size()) != in.getRank())
    return fail("perm has ", perm.size(), " entries for an input of rank ",
                in.getRank());
  llvm::SmallSet<int64_t, 8> seen;
  SmallVector<int64_t> shape;
  for (int64_t p : perm) {
    if (p < 0 || p >= in.getRank() || !seen.insert(p).second)
      return fail("perm ", str(perm), " is not a permutation of 0..",
                  in.getRank() - 1);
    shape.push_back(in.getDimSize(p));
  }
  results.push_back(RankedTensorType::get(shape, in.getElementType()));
  return success();
}

LogicalResult SliceOp::inferReturnTypes(MLIRContext *,
                                        std::optional<Location> loc,
                                        Adaptor adaptor,
                                        SmallVectorImpl<Type> &results) {
  Failure fail(loc, getOperationName());
  auto in = ranked(adaptor.getInput());
  auto axis =
      normalizeAxis(static_cast<int64_t>(adaptor.getAxis()), in.getRank());
  if (!axis)
    return fail("axis ", static_cast<int64_t>(adaptor.getAxis()),
                " is out of range for rank ", in.getRank());
  int64_t start = static_cast<int64_t>(adaptor.getStart());
  if (start < 0)
    return fail("start must be >= 0, got ", start);
  SmallVector<int64_t> shape(in.getShape());
  int64_t dim = shape[*axis];
  Attribute end = adaptor.getEnd();
  if (auto e = llvm::dyn_cast<IntegerAttr>(end)) {
    if (e.getInt() <= start)
      return fail("empty slice [", start, ", ", e.getInt(), ")");
    if (!ShapedType::isDynamic(dim) && e.getInt() > dim)
      return fail("end ", e.getInt(), " exceeds the size ", dim, " of axis ",
                  *axis);
    shape[*axis] = e.getInt() - start;
  } else {
    std::string why = checkDimExpr(llvm::cast<StringAttr>(end).getValue());
    if (!why.empty())
      return fail("end: ", why);
    if (!ShapedType::isDynamic(dim) && start >= dim)
      return fail("start ", start, " is not below the size ", dim, " of axis ",
                  *axis);
    shape[*axis] = ShapedType::kDynamic;
  }
  results.push_back(RankedTensorType::get(shape, in.getElementType()));
  return success();
}

LogicalResult ConcatOp::inferReturnTypes(MLIRContext *,
                                         std::optional<Location> loc,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &results) {
  Failure fail(loc, getOperationName());
  ValueRange inputs = adaptor.getInputs();
  if (inputs.empty())
    return fail("needs at least one input");
  auto first = ranked(inputs.front());
  auto axis =
      normalizeAxis(static_cast<int64_t>(adaptor.getAxis()), first.getRank());
  if (!axis)
    return fail("axis ", static_cast<int64_t>(adaptor.getAxis()),
                " is out of range for rank ", first.getRank());
  SmallVector<int64_t> shape(first.getShape());
  for (auto [i, v] : llvm::enumerate(inputs.drop_front())) {
    auto t = ranked(v);
    if (t.getRank() != first.getRank())
      return fail("input ", i + 1, " has rank ", t.getRank(), ", expected ",
                  first.getRank());
    if (t.getElementType() != first.getElementType())
      return fail("input ", i + 1, " has element type ",
                  str(t.getElementType()), ", expected ",
                  str(first.getElementType()));
    for (int64_t d = 0; d < t.getRank(); ++d) {
      if (d == *axis) {
        shape[d] = ShapedType::isDynamic(shape[d]) || t.isDynamicDim(d)
                       ? ShapedType::kDynamic
                       : shape[d] + t.getDimSize(d);
      } else if (!compatibleDims(shape[d], t.getDimSize(d))) {
        return fail("input ", i + 1, " has size ", t.getDimSize(d),
                    " at dimension ", d, ", expected ", shape[d]);
      } else if (ShapedType::isDynamic(shape[d])) {
        shape[d] = t.getDimSize(d);
      }
    }
  }
  results.push_back(RankedTensorType::get(shape, first.getElementType()));
  return success();
}

LogicalResult SplitOp::verify() {
  auto in = ranked(getInput());
  auto axis = normalizeAxis(static_cast<int64_t>(getAxis()), in.getRank());
  if (!axis)
    return emitOpError("axis ") << static_cast<int64_t>(getAxis())
                                << " is out of range for rank " << in.getRank();
  int64_t parts = getNumResults();
  if (parts < 1)
    return emitOpError("needs at least one result");
  SmallVector<int64_t> shape(in.getShape());
  if (!ShapedType::isDynamic(shape[*axis])) {
    if (shape[*axis] % parts != 0)
      return emitOpError("size ")
             << shape[*axis] << " of axis " << *axis
             << " is not divisible into " << parts << " equal parts";
    shape[*axis] /= parts;
  }
  auto expected = RankedTensorType::get(shape, in.getElementType());
  for (auto [i, t] : llvm::enumerate(getResultTypes()))
    if (!compatibleTypes(expected, t))
      return emitOpError("result ")
             << i << " has type " << t << ", expected " << expected;
  return success();
}

//===----------------------------------------------------------------------===//
// Reductions and normalization
//===----------------------------------------------------------------------===//

static LogicalResult inferReduce(StringRef opName, std::optional<Location> loc,
                                 Value input, ArrayRef<int64_t> axes,
                                 bool keepdim, SmallVectorImpl<Type> &results) {
  Failure fail(loc, opName);
  auto in = ranked(input);
  if (axes.empty())
    return fail("axes must not be empty");
  SmallVector<bool> reduced(in.getRank(), false);
  for (int64_t a : axes) {
    auto n = normalizeAxis(a, in.getRank());
    if (!n)
      return fail("axis ", a, " is out of range for rank ", in.getRank());
    if (reduced[*n])
      return fail("axis ", a, " is listed more than once");
    reduced[*n] = true;
  }
  SmallVector<int64_t> shape;
  for (int64_t d = 0; d < in.getRank(); ++d) {
    if (!reduced[d])
      shape.push_back(in.getDimSize(d));
    else if (keepdim)
      shape.push_back(1);
  }
  results.push_back(RankedTensorType::get(shape, in.getElementType()));
  return success();
}

#define KILN_REDUCE_INFER(Op)                                                  \
  LogicalResult Op::inferReturnTypes(                                          \
      MLIRContext *, std::optional<Location> loc, Adaptor adaptor,             \
      SmallVectorImpl<Type> &results) {                                        \
    return inferReduce(getOperationName(), loc, adaptor.getInput(),            \
                       adaptor.getAxes(), adaptor.getKeepdim(), results);      \
  }
KILN_REDUCE_INFER(ReduceSumOp)
KILN_REDUCE_INFER(ReduceMeanOp)
KILN_REDUCE_INFER(ReduceMaxOp)
#undef KILN_REDUCE_INFER

/// Checks a per-channel normalization parameter against the input's last
/// dimension.
static LogicalResult checkChannelParam(Failure &fail, StringRef what,
                                       RankedTensorType in,
                                       RankedTensorType p) {
  int64_t c = in.getDimSize(in.getRank() - 1);
  if (p.getRank() != 1 || !compatibleDims(p.getDimSize(0), c))
    return fail(what, " must have shape [", dimStr(c),
                "] to match the last dimension of the input, got ",
                str(p.getShape()));
  if (p.getElementType() != in.getElementType())
    return fail(what, " has element type ", str(p.getElementType()),
                ", expected ", str(in.getElementType()));
  return success();
}

/// What every normalization checks: an input of rank >= 1, `[C]` weight
/// and bias (when present) matching its last dimension, a positive eps.
static LogicalResult checkNorm(Failure &fail, RankedTensorType in, Value weight,
                               Value bias, const APFloat &eps) {
  if (in.getRank() < 1)
    return fail("input must have rank >= 1");
  if (failed(checkChannelParam(fail, "weight", in, ranked(weight))) ||
      (bias && failed(checkChannelParam(fail, "bias", in, ranked(bias)))))
    return failure();
  if (!(eps.convertToDouble() > 0))
    return fail("eps must be positive, got ", eps.convertToDouble());
  return success();
}

LogicalResult LayerNormOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &results) {
  Failure fail(loc, getOperationName());
  auto in = ranked(adaptor.getInput());
  if (failed(checkNorm(fail, in, adaptor.getWeight(), adaptor.getBias(),
                       adaptor.getEps())))
    return failure();
  results.push_back(in);
  return success();
}

LogicalResult RMSNormOp::inferReturnTypes(MLIRContext *,
                                          std::optional<Location> loc,
                                          Adaptor adaptor,
                                          SmallVectorImpl<Type> &results) {
  Failure fail(loc, getOperationName());
  auto in = ranked(adaptor.getInput());
  if (failed(
          checkNorm(fail, in, adaptor.getWeight(), Value(), adaptor.getEps())))
    return failure();
  results.push_back(in);
  return success();
}

LogicalResult SoftmaxOp::verify() {
  auto in = ranked(getInput());
  if (!normalizeAxis(static_cast<int64_t>(getAxis()), in.getRank()))
    return emitOpError("axis ") << static_cast<int64_t>(getAxis())
                                << " is out of range for rank " << in.getRank();
  return success();
}

LogicalResult DropoutOp::verify() {
  double rate = getRate().convertToDouble();
  if (!(rate >= 0 && rate < 1))
    return emitOpError("rate must be in [0, 1), got ") << rate;
  return success();
}

//===----------------------------------------------------------------------===//
// Transformer building blocks
//===----------------------------------------------------------------------===//

LogicalResult RopeOp::inferReturnTypes(MLIRContext *, std::optional<Location>,
                                       Adaptor adaptor,
                                       SmallVectorImpl<Type> &results) {
  results.push_back(adaptor.getInput().getType());
  return success();
}

LogicalResult RopeOp::verify() {
  auto in = ranked(getInput());
  if (in.getRank() != 3)
    return emitOpError("input must be [B, T, heads*head_dim], got ") << in;
  int64_t hd = static_cast<int64_t>(getHeadDim());
  if (hd <= 0 || hd % 2 != 0)
    return emitOpError("head_dim must be a positive even number, got ") << hd;
  int64_t c = in.getDimSize(2);
  if (!ShapedType::isDynamic(c) && c % hd != 0)
    return emitOpError("last dimension ")
           << c << " is not a multiple of head_dim " << hd;
  if (!(getTheta().convertToDouble() > 0))
    return emitOpError("theta must be positive, got ")
           << getTheta().convertToDouble();
  if (Value pos = getPositions()) {
    auto p = ranked(pos);
    bool ok = (p.getRank() == 1 &&
               compatibleDims(p.getDimSize(0), in.getDimSize(1))) ||
              (p.getRank() == 2 &&
               compatibleDims(p.getDimSize(0), in.getDimSize(0)) &&
               compatibleDims(p.getDimSize(1), in.getDimSize(1)));
    if (!ok)
      return emitOpError("positions must be [T] or [B, T] for an input ")
             << str(in.getShape()) << ", got " << str(p.getShape());
  }
  return success();
}

LogicalResult AttentionOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &results) {
  Failure fail(loc, getOperationName());
  auto q = ranked(adaptor.getQuery()), k = ranked(adaptor.getKey()),
       v = ranked(adaptor.getValue());
  for (auto [name, t] : {std::pair<StringRef, RankedTensorType>{"query", q},
                         {"key", k},
                         {"value", v}})
    if (t.getRank() != 3)
      return fail(name, " must be [B, T, heads*head_dim], got ", str(t));
  if (k.getElementType() != q.getElementType() ||
      v.getElementType() != q.getElementType())
    return fail("query, key and value must have the same element type");
  int64_t h = static_cast<int64_t>(adaptor.getNumHeads()),
          hkv = static_cast<int64_t>(adaptor.getNumKvHeads());
  if (h <= 0 || hkv <= 0)
    return fail("num_heads and num_kv_heads must be positive, got ", h, " and ",
                hkv);
  if (h % hkv != 0)
    return fail("num_heads ", h, " is not a multiple of num_kv_heads ", hkv);
  int64_t qc = q.getDimSize(2), kc = k.getDimSize(2), vc = v.getDimSize(2);
  int64_t d = ShapedType::kDynamic, dv = ShapedType::kDynamic;
  if (!ShapedType::isDynamic(qc)) {
    if (qc % h != 0)
      return fail("query width ", qc, " is not divisible by num_heads ", h);
    d = qc / h;
  }
  if (!ShapedType::isDynamic(kc) && !ShapedType::isDynamic(d) && kc != hkv * d)
    return fail("key width ", kc, " must be num_kv_heads * head_dim = ", hkv,
                " * ", d, " = ", hkv * d);
  if (!ShapedType::isDynamic(vc)) {
    if (vc % hkv != 0)
      return fail("value width ", vc, " is not divisible by num_kv_heads ",
                  hkv);
    dv = vc / hkv;
  }
  if (!compatibleDims(q.getDimSize(0), k.getDimSize(0)) ||
      !compatibleDims(q.getDimSize(0), v.getDimSize(0)))
    return fail("batch sizes differ: query ", str(q.getShape()), ", key ",
                str(k.getShape()), ", value ", str(v.getShape()));
  if (!compatibleDims(k.getDimSize(1), v.getDimSize(1)))
    return fail("key and value lengths differ: ", dimStr(k.getDimSize(1)),
                " vs ", dimStr(v.getDimSize(1)));
  int64_t b = q.getDimSize(0), tq = q.getDimSize(1), tk = k.getDimSize(1);
  if (Value m = adaptor.getMask()) {
    auto mt = ranked(m);
    if (mt.getRank() != 2 || !compatibleDims(mt.getDimSize(0), b) ||
        !compatibleDims(mt.getDimSize(1), tk))
      return fail("mask must be a [B, Tk] = [", dimStr(b), ", ", dimStr(tk),
                  "] key padding mask, got ", str(mt.getShape()));
  }
  if (Value bias = adaptor.getBias()) {
    auto bt = ranked(bias);
    SmallVector<int64_t> full = {b, h, tq, tk}, out;
    int64_t bad;
    if ((bt.getRank() != 3 && bt.getRank() != 4) ||
        !broadcastShapes(full, bt.getShape(), out, bad) || out.size() != 4 ||
        !llvm::all_of(llvm::zip(out, full), [](auto p) {
          return compatibleDims(std::get<0>(p), std::get<1>(p));
        }))
      return fail("bias must broadcast to [B, H, Tq, Tk] = ", str(full),
                  ", got ", str(bt.getShape()));
    if (bt.getElementType() != q.getElementType())
      return fail("bias has element type ", str(bt.getElementType()),
                  ", expected ", str(q.getElementType()));
  }
  if (!(adaptor.getScale().convertToDouble() > 0))
    return fail("scale must be positive, got ",
                adaptor.getScale().convertToDouble());
  int64_t outWidth = ShapedType::isDynamic(dv) ? ShapedType::kDynamic : h * dv;
  results.push_back(
      RankedTensorType::get({b, tq, outWidth}, q.getElementType()));
  if (adaptor.getSaveLse())
    results.push_back(
        RankedTensorType::get({b, h, tq}, Float32Type::get(q.getContext())));
  return success();
}

LogicalResult RelativePositionBucketOp::inferReturnTypes(
    MLIRContext *ctx, std::optional<Location> loc, Adaptor adaptor,
    SmallVectorImpl<Type> &results) {
  Failure fail(loc, getOperationName());
  auto q = ranked(adaptor.getQuery()), k = ranked(adaptor.getKey());
  if (q.getRank() < 2 || k.getRank() < 2)
    return fail("query and key must have rank >= 2 (dimension -2 is the "
                "sequence)");
  int64_t nb = static_cast<int64_t>(adaptor.getNumBuckets()),
          maxDist = static_cast<int64_t>(adaptor.getMaxDistance());
  bool bidir = adaptor.getBidirectional();
  // T5 halves the buckets for direction, then keeps half of the rest exact.
  int64_t exact = (bidir ? nb / 2 : nb) / 2;
  if (nb <= 0 || (bidir && nb % 2 != 0) || exact < 1)
    return fail("num_buckets must be positive", bidir ? ", even" : "",
                " and leave at least one exact bucket, got ", nb);
  if (maxDist <= exact)
    return fail("max_distance must exceed the ", exact,
                " exactly-bucketed distances, got ", maxDist);
  results.push_back(RankedTensorType::get(
      {q.getDimSize(q.getRank() - 2), k.getDimSize(k.getRank() - 2)},
      IntegerType::get(ctx, 32)));
  return success();
}

/// Logits [..., V] and integer targets [...], shared by the loss and its
/// gradient.
static LogicalResult checkCrossEntropyOperands(StringRef opName,
                                               std::optional<Location> loc,
                                               Value logitsValue,
                                               Value targets) {
  Failure fail(loc, opName);
  auto logits = ranked(logitsValue), t = ranked(targets);
  if (logits.getRank() < 1)
    return fail("logits must have a class dimension");
  ArrayRef<int64_t> outer = logits.getShape().drop_back();
  if (t.getRank() != static_cast<int64_t>(outer.size()) ||
      !llvm::all_of(llvm::zip(outer, t.getShape()), [](auto p) {
        return compatibleDims(std::get<0>(p), std::get<1>(p));
      }))
    return fail("targets ", str(t.getShape()),
                " must match the logits shape without the class dimension, ",
                str(outer));
  return success();
}

LogicalResult CrossEntropyOp::inferReturnTypes(MLIRContext *ctx,
                                               std::optional<Location> loc,
                                               Adaptor adaptor,
                                               SmallVectorImpl<Type> &results) {
  if (failed(checkCrossEntropyOperands(
          getOperationName(), loc, adaptor.getLogits(), adaptor.getTargets())))
    return failure();
  results.push_back(RankedTensorType::get({}, Float32Type::get(ctx)));
  return success();
}

LogicalResult
CrossEntropyGradOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                     Adaptor adaptor,
                                     SmallVectorImpl<Type> &results) {
  if (failed(checkCrossEntropyOperands(
          getOperationName(), loc, adaptor.getLogits(), adaptor.getTargets())))
    return failure();
  results.push_back(adaptor.getLogits().getType());
  return success();
}

//===----------------------------------------------------------------------===//
// Gradient ops
//===----------------------------------------------------------------------===//

LogicalResult
EmbeddingGradOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                  Adaptor adaptor,
                                  SmallVectorImpl<Type> &results) {
  Failure fail(loc, getOperationName());
  auto g = ranked(adaptor.getGrad()), ids = ranked(adaptor.getIndices());
  int64_t rows = static_cast<int64_t>(adaptor.getNumEmbeddings());
  if (rows <= 0)
    return fail("num_embeddings must be positive, got ", rows);
  bool ok = g.getRank() == ids.getRank() + 1;
  for (int64_t d = 0; ok && d < ids.getRank(); ++d)
    ok = compatibleDims(g.getDimSize(d), ids.getDimSize(d));
  if (!ok)
    return fail("gradient ", str(g.getShape()), " must be the indices' shape ",
                str(ids.getShape()), " followed by the embedding width");
  results.push_back(RankedTensorType::get({rows, g.getDimSize(g.getRank() - 1)},
                                          g.getElementType()));
  return success();
}

LogicalResult ActivationGradOp::verify() {
  if (getKind() == Activation::None)
    return emitOpError("kind must be relu, gelu, gelu_tanh or silu, not none");
  return success();
}

LogicalResult SliceGradOp::verify() {
  auto g = ranked(getGrad()), like = ranked(getLike());
  if (g.getRank() != like.getRank() ||
      g.getElementType() != like.getElementType())
    return emitOpError("gradient ")
           << g << " and input " << like << " differ in rank or element type";
  auto axis = normalizeAxis(static_cast<int64_t>(getAxis()), like.getRank());
  if (!axis)
    return emitOpError("axis ")
           << static_cast<int64_t>(getAxis()) << " is out of range for rank "
           << like.getRank();
  int64_t start = static_cast<int64_t>(getStart());
  if (start < 0)
    return emitOpError("start must not be negative, got ") << start;
  for (int64_t d = 0; d < like.getRank(); ++d)
    if (d != *axis && !compatibleDims(g.getDimSize(d), like.getDimSize(d)))
      return emitOpError("gradient ")
             << g << " does not match input " << like << " outside the axis";
  int64_t n = g.getDimSize(*axis), total = like.getDimSize(*axis);
  if (!ShapedType::isDynamic(n) && !ShapedType::isDynamic(total) &&
      start + n > total)
    return emitOpError("[")
           << start << ", " << start + n << ") is outside dimension " << *axis
           << " of " << like;
  return success();
}

LogicalResult ReshapeLikeOp::verify() {
  auto in = ranked(getInput()), like = ranked(getLike());
  if (in.getElementType() != like.getElementType())
    return emitOpError("element types differ: ") << in << " vs " << like;
  if (in.hasStaticShape() && like.hasStaticShape() &&
      in.getNumElements() != like.getNumElements())
    return emitOpError("cannot reshape ") << in << " like " << like;
  return success();
}

LogicalResult ReduceGradOp::verify() {
  SmallVector<Type> reduced;
  if (failed(inferReduce(getOperationName(), getLoc(), getInput(), getAxes(),
                         getKeepdim(), reduced)))
    return failure();
  if (!compatibleTypes(reduced, TypeRange{getGrad().getType()}))
    return emitOpError("gradient ")
           << getGrad().getType() << " does not match the reduction's result "
           << reduced.front();
  return success();
}

LogicalResult ConcatGradOp::verify() {
  if (getLike().empty() || getLike().size() != getNumResults())
    return emitOpError("needs one result per concatenated input");
  auto g = ranked(getGrad());
  auto axis = normalizeAxis(static_cast<int64_t>(getAxis()), g.getRank());
  if (!axis)
    return emitOpError("axis ") << static_cast<int64_t>(getAxis())
                                << " is out of range for rank " << g.getRank();
  for (auto [i, like, r] :
       llvm::enumerate(getLike().getTypes(), getResultTypes())) {
    auto lt = llvm::cast<RankedTensorType>(like);
    if (!compatibleTypes(TypeRange{like}, TypeRange{r}))
      return emitOpError("result ")
             << i << " has type " << r << ", expected " << like;
    if (lt.getRank() != g.getRank() ||
        lt.getElementType() != g.getElementType())
      return emitOpError("input ")
             << i << " " << like << " differs from the gradient " << g
             << " in rank or element type";
    for (int64_t d = 0; d < g.getRank(); ++d)
      if (d != *axis && !compatibleDims(lt.getDimSize(d), g.getDimSize(d)))
        return emitOpError("input ")
               << i << " " << like << " does not match the gradient " << g
               << " outside the axis";
  }
  return success();
}

/// The result types kiln.attention infers from these operands and
/// attributes: the rules its gradient and its cached form share.
static LogicalResult inferAttention(Operation *op, Value q, Value k, Value v,
                                    Value mask, Value bias, IntegerAttr heads,
                                    IntegerAttr kvHeads, FloatAttr scale,
                                    BoolAttr causal, bool saveLse,
                                    SmallVectorImpl<Type> &out) {
  AttentionOp::Properties props;
  props.num_heads = heads;
  props.num_kv_heads = kvHeads;
  props.scale = scale;
  props.causal = causal;
  if (saveLse)
    props.save_lse = UnitAttr::get(op->getContext());
  SmallVector<Value> operands{q, k, v};
  for (Value optional : {mask, bias})
    if (optional)
      operands.push_back(optional);
  props.operandSegmentSizes = {1, 1, 1, mask ? 1 : 0, bias ? 1 : 0};
  return AttentionOp::inferReturnTypes(op->getContext(), op->getLoc(), operands,
                                       nullptr, OpaqueProperties(&props), {},
                                       out);
}

LogicalResult CachedAttentionOp::verify() {
  // The attention rules for this call's tokens, then the cache's.
  SmallVector<Type> fwd;
  if (failed(inferAttention(getOperation(), getQuery(), getKey(), getValue(),
                            {}, {}, getNumHeadsAttr(), getNumKvHeadsAttr(),
                            getScaleAttr(), BoolAttr::get(getContext(), true),
                            /*saveLse=*/false, fwd)))
    return failure();
  if (!compatibleTypes(TypeRange{getResult().getType()}, TypeRange{fwd[0]}))
    return emitOpError("result has type ")
           << getResult().getType() << ", expected " << fwd[0];
  auto q = ranked(getQuery());
  int64_t b = q.getDimSize(0), t = q.getDimSize(1);
  auto kc = ranked(getKeyCache()), vc = ranked(getValueCache());
  for (auto [what, cache, fresh] :
       {std::tuple<StringRef, RankedTensorType, RankedTensorType>{
            "key", kc, ranked(getKey())},
        {"value", vc, ranked(getValue())}}) {
    if (cache.getRank() != 3 || cache.getElementType() != q.getElementType() ||
        !compatibleDims(cache.getDimSize(0), b) ||
        !compatibleDims(cache.getDimSize(2), fresh.getDimSize(2)))
      return emitOpError("the ")
             << what << " cache must be [B, S, " << dimStr(fresh.getDimSize(2))
             << "] of " << str(q.getElementType()) << ", got " << Type(cache);
  }
  if (!compatibleDims(kc.getDimSize(1), vc.getDimSize(1)))
    return emitOpError("the key and value caches have different lengths: ")
           << dimStr(kc.getDimSize(1)) << " and " << dimStr(vc.getDimSize(1));
  auto pos = ranked(getPositions()), len = ranked(getLengths());
  if (pos.getRank() != 2 || !compatibleDims(pos.getDimSize(0), b) ||
      !compatibleDims(pos.getDimSize(1), t))
    return emitOpError("positions must be [B, T] = [")
           << dimStr(b) << ", " << dimStr(t) << "], got " << Type(pos);
  if (len.getRank() != 1 || !compatibleDims(len.getDimSize(0), b))
    return emitOpError("lengths must be [B] = [")
           << dimStr(b) << "], got " << Type(len);
  if (static_cast<int64_t>(getWindow()) < 0)
    return emitOpError("window must be >= 0 (0: none), got ")
           << static_cast<int64_t>(getWindow());
  if (Value table = getRelativeBias()) {
    auto t = ranked(table);
    int64_t buckets = static_cast<int64_t>(getRelativeBuckets());
    int64_t distance = static_cast<int64_t>(getRelativeMaxDistance());
    if (buckets < 4 || distance < 2)
      return emitOpError("relative_buckets must be >= 4 and "
                         "relative_max_distance >= 2, got ")
             << buckets << " and " << distance;
    if (t.getRank() != 2 || t.getElementType() != q.getElementType() ||
        !compatibleDims(t.getDimSize(0), buckets) ||
        !compatibleDims(t.getDimSize(1), getNumHeads()))
      return emitOpError("relative_bias must be [")
             << buckets << ", " << getNumHeads() << "] of "
             << str(q.getElementType()) << ", got " << Type(t);
  }
  return success();
}

LogicalResult AttentionGradOp::verify() {
  // The forward op's rules, then the gradients' types.
  SmallVector<Type> fwd;
  if (failed(inferAttention(getOperation(), getQuery(), getKey(), getValue(),
                            getMask(), getBias(), getNumHeadsAttr(),
                            getNumKvHeadsAttr(), getScaleAttr(),
                            getCausalAttr(), /*saveLse=*/true, fwd)))
    return failure();
  auto check = [&](StringRef what, Type got, Type want) -> LogicalResult {
    if (compatibleTypes(TypeRange{got}, TypeRange{want}))
      return success();
    return emitOpError() << what << " has type " << got << ", expected "
                         << want;
  };
  if (failed(check("the upstream gradient", getGrad().getType(), fwd[0])) ||
      failed(check("the forward output", getOut().getType(), fwd[0])) ||
      failed(check("lse", getLse().getType(), fwd[1])) ||
      failed(check("the query gradient", getQueryGrad().getType(),
                   getQuery().getType())) ||
      failed(check("the key gradient", getKeyGrad().getType(),
                   getKey().getType())) ||
      failed(check("the value gradient", getValueGrad().getType(),
                   getValue().getType())))
    return failure();
  if (static_cast<bool>(getBias()) != static_cast<bool>(getBiasGrad()))
    return emitOpError("has a bias gradient exactly when it has a bias");
  if (getBias() && failed(check("the bias gradient", getBiasGrad().getType(),
                                getBias().getType())))
    return failure();
  return success();
}

LogicalResult GlobalNormOp::verify() {
  if (getInputs().empty())
    return emitOpError("needs at least one operand");
  return success();
}

LogicalResult OptimizerUpdateOp::verify() {
  if (!getParam().getDefiningOp<ParamOp>())
    return emitOpError("updates a parameter: its first operand must come "
                       "from kiln.param");
  if (getParam().getType() != getGrad().getType())
    return emitOpError("gradient ")
           << getGrad().getType() << " does not match the parameter "
           << getParam().getType();
  double b1 = getBeta1().convertToDouble(), b2 = getBeta2().convertToDouble(),
         mu = getMomentum().convertToDouble();
  if (!(b1 >= 0 && b1 < 1) || !(b2 >= 0 && b2 < 1) || !(mu >= 0 && mu < 1) ||
      !(getEps().convertToDouble() > 0) ||
      !(getWeightDecay().convertToDouble() >= 0) ||
      !(getMaxNorm().convertToDouble() >= 0))
    return emitOpError("betas and momentum must be in [0, 1), eps positive, "
                       "weight_decay and max_norm non-negative");
  return success();
}

//===----------------------------------------------------------------------===//
// Fused ops
//===----------------------------------------------------------------------===//

LogicalResult FusedMatmulOp::inferReturnTypes(MLIRContext *,
                                              std::optional<Location> loc,
                                              Adaptor adaptor,
                                              SmallVectorImpl<Type> &results) {
  Failure fail(loc, getOperationName());
  auto a = ranked(adaptor.getLhs()), b = ranked(adaptor.getRhs());
  if (a.getRank() < 2 || b.getRank() < 2)
    return fail("operands must have rank >= 2, got ", str(a), " and ", str(b));
  bool ta = adaptor.getTransposeA(), tb = adaptor.getTransposeB();
  int64_t m =
      ta ? a.getDimSize(a.getRank() - 1) : a.getDimSize(a.getRank() - 2);
  int64_t ka =
      ta ? a.getDimSize(a.getRank() - 2) : a.getDimSize(a.getRank() - 1);
  int64_t kb =
      tb ? b.getDimSize(b.getRank() - 1) : b.getDimSize(b.getRank() - 2);
  int64_t n =
      tb ? b.getDimSize(b.getRank() - 2) : b.getDimSize(b.getRank() - 1);
  if (a.getElementType() != b.getElementType())
    return fail("operand element types differ: ", str(a.getElementType()),
                " vs ", str(b.getElementType()));
  if (!compatibleDims(ka, kb))
    return fail("contraction dimensions differ: lhs has K = ", dimStr(ka),
                ", rhs has K = ", dimStr(kb));
  Activation act = adaptor.getActivation();
  SmallVector<int64_t> shape;
  if (adaptor.getReduceBatch()) {
    bool sameBatch = a.getRank() == b.getRank() && a.getRank() >= 3;
    for (int64_t d = 0; sameBatch && d < a.getRank() - 2; ++d)
      sameBatch = compatibleDims(a.getDimSize(d), b.getDimSize(d));
    if (!sameBatch || !ta || tb)
      return fail("reduce_batch needs transpose_a, no transpose_b and operands "
                  "of one rank >= 3 with equal batch dimensions, got ",
                  str(a), " and ", str(b));
    if (adaptor.getBias() || adaptor.getResidual() || act != Activation::None)
      return fail("reduce_batch takes no bias, residual or activation");
    shape = {m, n};
  } else {
    int64_t bad;
    if (!broadcastShapes(a.getShape().drop_back(2), b.getShape().drop_back(2),
                         shape, bad))
      return fail("batch dimensions ", str(a.getShape().drop_back(2)), " and ",
                  str(b.getShape().drop_back(2)),
                  " are not broadcast-compatible");
    shape.push_back(m);
    shape.push_back(n);
  }
  auto result = RankedTensorType::get(shape, a.getElementType());
  if (Value bias = adaptor.getBias()) {
    auto bt = ranked(bias);
    if (bt.getRank() != 1 || !compatibleDims(bt.getDimSize(0), n) ||
        bt.getElementType() != a.getElementType())
      return fail("bias must be [", dimStr(n),
                  "] of the operands' element "
                  "type, got ",
                  str(bt));
  }
  if (Value r = adaptor.getResidual())
    if (!compatibleTypes(TypeRange{r.getType()}, TypeRange{result}))
      return fail("residual ", str(r.getType()), " must have the result type ",
                  str(result));
  results.push_back(result);
  return success();
}

LogicalResult AddNormOp::inferReturnTypes(MLIRContext *,
                                          std::optional<Location> loc,
                                          Adaptor adaptor,
                                          SmallVectorImpl<Type> &results) {
  Failure fail(loc, getOperationName());
  auto in = ranked(adaptor.getInput());
  if (failed(checkNorm(fail, in, adaptor.getWeight(), adaptor.getBias(),
                       adaptor.getEps())))
    return failure();
  if ((adaptor.getKind() == NormKind::LayerNorm) !=
      static_cast<bool>(adaptor.getBias()))
    return fail("layernorm takes a bias and rmsnorm none");
  if (!compatibleTypes(TypeRange{adaptor.getResidual().getType()},
                       TypeRange{in}))
    return fail("residual ", str(adaptor.getResidual().getType()),
                " must have the input type ", str(in));
  results.push_back(in);
  results.push_back(in);
  return success();
}

LogicalResult NormGradOp::inferReturnTypes(MLIRContext *,
                                           std::optional<Location> loc,
                                           Adaptor adaptor,
                                           SmallVectorImpl<Type> &results) {
  Failure fail(loc, getOperationName());
  auto in = ranked(adaptor.getInput());
  if (failed(
          checkNorm(fail, in, adaptor.getWeight(), Value(), adaptor.getEps())))
    return failure();
  if (!compatibleTypes(TypeRange{adaptor.getGrad().getType()}, TypeRange{in}))
    return fail("gradient ", str(adaptor.getGrad().getType()),
                " must have the input type ", str(in));
  results.push_back(in);
  results.push_back(adaptor.getWeight().getType());
  results.push_back(adaptor.getWeight().getType());
  return success();
}

LogicalResult SoftmaxCrossEntropyOp::inferReturnTypes(
    MLIRContext *ctx, std::optional<Location> loc, Adaptor adaptor,
    SmallVectorImpl<Type> &results) {
  if (failed(checkCrossEntropyOperands(
          getOperationName(), loc, adaptor.getLogits(), adaptor.getTargets())))
    return failure();
  results.push_back(RankedTensorType::get({}, Float32Type::get(ctx)));
  results.push_back(adaptor.getLogits().getType());
  return success();
}

void FusedElementwiseOp::build(OpBuilder &builder, OperationState &state,
                               Type result, ValueRange inputs) {
  state.addOperands(inputs);
  state.addTypes(result);
  Region *body = state.addRegion();
  Block *block = new Block();
  body->push_back(block);
  auto scalar = RankedTensorType::get({}, builder.getF32Type());
  for (Value v : inputs)
    block->addArgument(scalar, v.getLoc());
}

LogicalResult FusedElementwiseOp::verify() {
  auto result = llvm::cast<RankedTensorType>(getResult().getType());
  if (!result.getElementType().isF32())
    return emitOpError("computes f32 elements only, got ") << result;
  for (auto [i, v] : llvm::enumerate(getInputs())) {
    auto t = llvm::cast<RankedTensorType>(v.getType());
    SmallVector<int64_t> joined;
    int64_t bad;
    if (!t.getElementType().isF32() ||
        !broadcastShapes(t.getShape(), result.getShape(), joined, bad) ||
        !compatibleTypes(
            TypeRange{RankedTensorType::get(joined, t.getElementType())},
            TypeRange{result}))
      return emitOpError("input ")
             << i << " " << t << " does not broadcast to the result " << result;
  }
  Block &body = getBody().front();
  if (body.getNumArguments() != getInputs().size())
    return emitOpError("body has ")
           << body.getNumArguments() << " arguments for " << getInputs().size()
           << " inputs";
  auto scalar = RankedTensorType::get({}, Float32Type::get(getContext()));
  for (BlockArgument a : body.getArguments())
    if (a.getType() != scalar)
      return emitOpError("body arguments must be tensor<f32>");
  for (Operation &op : body) {
    bool allowed =
        llvm::isa<AddOp, SubOp, MulOp, DivOp, MaxOp, MinOp, PowOp, NegOp, ExpOp,
                  LogOp, SqrtOp, RsqrtOp, TanhOp, SigmoidOp, ReluOp, SiluOp,
                  GeluOp, ActivationGradOp, ConstantOp, YieldOp>(op);
    if (!allowed)
      return op.emitOpError("is not an elementwise op a fused body may use");
    for (Type t : op.getResultTypes())
      if (t != scalar)
        return op.emitOpError("must compute tensor<f32> in a fused body");
  }
  if (!llvm::isa<YieldOp>(body.back()))
    return emitOpError("body must end with kiln.yield");
  return success();
}

#include "ir/KilnInterfaces.cpp.inc"

#define GET_OP_CLASSES
#include "ir/KilnOps.cpp.inc"
