//===- OpTable.cpp - every runtime op, declared once ----------------------===//
//
// The rows are in kart::Op order (the schema's enum is append-only); a
// static check below and a unit test keep the two in step.
//
//===----------------------------------------------------------------------===//
#include "runtime/core/OpTable.h"
#include "runtime/core/OpRules.h"

#include <iterator>

using namespace kiln;
using namespace kiln::runtime;
using namespace kiln::runtime::rules;
using kart::Attrs;
using kart::Op;

namespace {

constexpr Arity kOne{1, 1}, kTwo{2, 2}, kMany{1, -1};
constexpr uint32_t kElementwiseBinary = kBinary | kFusible;
constexpr uint32_t kElementwiseUnary = kUnary | kFusible;

constexpr uint32_t bits(std::initializer_list<int> is) {
  uint32_t b = 0;
  for (int i : is)
    b |= 1u << i;
  return b;
}

// clang-format off
constexpr OpInfo kOps[] = {
// op                      inputs  optional     outputs in-place flags               attributes                         check                        shape rule
{Op::Embedding,            kTwo,   0,           kOne,   -1, 0,   0,                  Attrs::NONE,                        checkEmbedding,              shapeEmbedding},
{Op::Matmul,               kTwo,   0,           kOne,   -1, 0,   0,                  Attrs::MatmulAttrs,                 checkMatmul,                 shapeMatmul},
{Op::Add,                  kTwo,   0,           kOne,   -1, 0,   kElementwiseBinary, Attrs::NONE,                        checkBinary,                 shapeBinary},
{Op::Sub,                  kTwo,   0,           kOne,   -1, 0,   kElementwiseBinary, Attrs::NONE,                        checkBinary,                 shapeBinary},
{Op::Mul,                  kTwo,   0,           kOne,   -1, 0,   kElementwiseBinary, Attrs::NONE,                        checkBinary,                 shapeBinary},
{Op::Div,                  kTwo,   0,           kOne,   -1, 0,   kElementwiseBinary, Attrs::NONE,                        checkBinary,                 shapeBinary},
{Op::Max,                  kTwo,   0,           kOne,   -1, 0,   kElementwiseBinary, Attrs::NONE,                        checkBinary,                 shapeBinary},
{Op::Min,                  kTwo,   0,           kOne,   -1, 0,   kElementwiseBinary, Attrs::NONE,                        checkBinary,                 shapeBinary},
{Op::Pow,                  kTwo,   0,           kOne,   -1, 0,   kElementwiseBinary, Attrs::NONE,                        checkBinary,                 shapeBinary},
{Op::Neg,                  kOne,   0,           kOne,   -1, 0,   kElementwiseUnary,  Attrs::NONE,                        checkUnary,                  shapeLikeFirst},
{Op::Exp,                  kOne,   0,           kOne,   -1, 0,   kElementwiseUnary,  Attrs::NONE,                        checkUnary,                  shapeLikeFirst},
{Op::Log,                  kOne,   0,           kOne,   -1, 0,   kElementwiseUnary,  Attrs::NONE,                        checkUnary,                  shapeLikeFirst},
{Op::Sqrt,                 kOne,   0,           kOne,   -1, 0,   kElementwiseUnary,  Attrs::NONE,                        checkUnary,                  shapeLikeFirst},
{Op::Rsqrt,                kOne,   0,           kOne,   -1, 0,   kElementwiseUnary,  Attrs::NONE,                        checkUnary,                  shapeLikeFirst},
{Op::Tanh,                 kOne,   0,           kOne,   -1, 0,   kElementwiseUnary,  Attrs::NONE,                        checkUnary,                  shapeLikeFirst},
{Op::Sigmoid,              kOne,   0,           kOne,   -1, 0,   kElementwiseUnary,  Attrs::NONE,                        checkUnary,                  shapeLikeFirst},
{Op::Relu,                 kOne,   0,           kOne,   -1, 0,   kElementwiseUnary,  Attrs::NONE,                        checkUnary,                  shapeLikeFirst},
{Op::Silu,                 kOne,   0,           kOne,   -1, 0,   kElementwiseUnary,  Attrs::NONE,                        checkUnary,                  shapeLikeFirst},
{Op::Gelu,                 kOne,   0,           kOne,   -1, 0,   kElementwiseUnary,  Attrs::GeluAttrs,                   checkUnary,                  shapeLikeFirst},
{Op::Cast,                 kOne,   0,           kOne,   -1, 0,   0,                  Attrs::NONE,                        nullptr,                     shapeLikeFirst},
{Op::Reshape,              kOne,   0,           kOne,    0, 0,   0,                  Attrs::ReshapeAttrs,                checkReshape,                shapeReshape},
{Op::Transpose,            kOne,   0,           kOne,   -1, 0,   0,                  Attrs::TransposeAttrs,              checkTranspose,              shapeTranspose},
{Op::Slice,                kOne,   0,           kOne,   -1, 0,   0,                  Attrs::SliceAttrs,                  checkSlice,                  shapeSlice},
{Op::Concat,               kMany,  0,           kOne,   -1, 0,   0,                  Attrs::AxisAttrs,                   checkConcat,                 shapeConcat},
{Op::Split,                kOne,   0,           kMany,  -1, 0,   0,                  Attrs::AxisAttrs,                   checkSplit,                  shapeSplit},
{Op::ReduceSum,            kOne,   0,           kOne,   -1, 0,   0,                  Attrs::ReduceAttrs,                 checkReduce,                 shapeReduce},
{Op::ReduceMean,           kOne,   0,           kOne,   -1, 0,   0,                  Attrs::ReduceAttrs,                 checkReduce,                 shapeReduce},
{Op::ReduceMax,            kOne,   0,           kOne,   -1, 0,   0,                  Attrs::ReduceAttrs,                 checkReduce,                 shapeReduce},
{Op::LayerNorm,            {3, 3}, 0,           kOne,   -1, 0,   0,                  Attrs::NormAttrs,                   checkNorm,                   shapeNorm},
{Op::RMSNorm,              kTwo,   0,           kOne,   -1, 0,   0,                  Attrs::NormAttrs,                   checkNorm,                   shapeNorm},
{Op::Softmax,              kOne,   0,           kOne,   -1, 0,   0,                  Attrs::AxisAttrs,                   checkSoftmax,                shapeLikeFirst},
{Op::Dropout,              kOne,   0,           kOne,   -1, 0,   0,                  Attrs::DropoutAttrs,                checkSameType,               shapeLikeFirst},
{Op::Rope,                 kTwo,   bits({1}),   kOne,   -1, 0,   0,                  Attrs::RopeAttrs,                   checkRope,                   shapeRope},
{Op::Attention,            {5, 5}, bits({3, 4}), {1, 2}, -1, 0,  0,                  Attrs::AttentionAttrs,              checkAttention,              shapeAttention},
{Op::RelativePositionBucket, kTwo, 0,           kOne,   -1, 0,   0,                  Attrs::RelativePositionBucketAttrs, checkRelativePositionBucket, shapeRelativePositionBucket},
{Op::CrossEntropy,         kTwo,   0,           kOne,   -1, 0,   0,                  Attrs::CrossEntropyAttrs,           checkCrossEntropy,           shapeCrossEntropy},
{Op::CrossEntropyGrad,     {3, 3}, 0,           kOne,   -1, 0,   0,                  Attrs::CrossEntropyAttrs,           checkCrossEntropyGrad,       shapeCrossEntropy},
{Op::EmbeddingGrad,        kTwo,   0,           kOne,   -1, 0,   0,                  Attrs::EmbeddingGradAttrs,          checkEmbeddingGrad,          shapeEmbeddingGrad},
{Op::ActivationGrad,       kTwo,   0,           kOne,   -1, 0,   kFusible,           Attrs::ActivationGradAttrs,         checkActivationGrad,         shapeActivationGrad},
{Op::SliceGrad,            kTwo,   0,           kOne,   -1, 0,   0,                  Attrs::SliceGradAttrs,              checkSliceGrad,              shapeSliceGrad},
{Op::ReshapeLike,          kTwo,   0,           kOne,    0, 0,   0,                  Attrs::NONE,                        checkLike,                   shapeReshapeLike},
{Op::ZerosLike,            kOne,   0,           kOne,   -1, 0,   0,                  Attrs::NONE,                        checkLike,                   shapeLikeFirst},
{Op::ReduceGrad,           kTwo,   0,           kOne,   -1, 0,   0,                  Attrs::ReduceGradAttrs,             checkReduceGrad,             shapeReduceGrad},
{Op::ConcatGrad,           {2, -1}, 0,          kMany,  -1, 0,   0,                  Attrs::AxisAttrs,                   checkConcatGrad,             shapeConcatGrad},
{Op::AttentionGrad,        {8, 8}, bits({6, 7}), {3, 4}, -1, 0,  0,                  Attrs::AttentionAttrs,              checkAttentionGrad,          shapeAttentionGrad},
{Op::GlobalNorm,           kMany,  0,           kOne,   -1, 0,   0,                  Attrs::NONE,                        checkGlobalNorm,             shapeGlobalNorm},
{Op::OptimizerUpdate,      {5, 5}, 0,           {0, 0}, -1, 0,   kWritesParameter,   Attrs::OptimizerAttrs,              checkOptimizerUpdate,        shapeOptimizerUpdate},
{Op::FusedMatmul,          {4, 4}, bits({2, 3}), kOne,  -1, 0,   0,                  Attrs::FusedMatmulAttrs,            checkFused,                  shapeFused},
{Op::AddNorm,              {4, 4}, bits({3}),   kTwo,   -1, 0,   0,                  Attrs::FusedNormAttrs,              checkFused,                  shapeFused},
{Op::NormGrad,             {3, 3}, 0,           {3, 3}, -1, 0,   0,                  Attrs::FusedNormAttrs,              checkFused,                  shapeFused},
{Op::SoftmaxCrossEntropy,  {3, 3}, 0,           kTwo,    0, 1,   0,                  Attrs::CrossEntropyAttrs,           checkFused,                  shapeFused},
{Op::FusedElementwise,     kMany,  0,           kOne,   -1, 0,   0,                  Attrs::ElementwiseProgram,          checkFused,                  shapeFused},
{Op::CachedAttention,      {7, 8}, bits({7}),   kOne,   -1, 0,   0,                  Attrs::AttentionAttrs,              checkCachedAttention,        shapeCachedAttention},
};
// clang-format on

static_assert(oneRowPerOp(kOps), "the op table needs one row per kart::Op, "
                                 "in enum order");

} // namespace

const OpInfo *kiln::runtime::findOp(Op op) {
  auto i = static_cast<size_t>(op);
  return i < std::size(kOps) ? &kOps[i] : nullptr;
}

const OpInfo &kiln::runtime::opInfo(Op op) { return *findOp(op); }

uint32_t kiln::runtime::writtenInputs(Op op) {
  // The caches a decoding step extends (kiln.cached_attention); devices
  // that copy operands (the CUDA device) copy these back.
  return op == Op::CachedAttention ? (1u << 3) | (1u << 4) : 0;
}

const char *kiln::runtime::attrsName(Attrs a) {
  return a <= Attrs::MAX ? kart::EnumNameAttrs(a) : "unknown";
}

std::string kiln::runtime::checkAgainstRow(const kart::Kernel &k) {
  const OpInfo *info = findOp(k.op());
  if (!info)
    return "unknown op code " + std::to_string(static_cast<int>(k.op()));
  int nin = k.inputs() ? k.inputs()->size() : 0;
  int nout = k.outputs() ? k.outputs()->size() : 0;
  if (!info->inputs.admits(nin))
    return "has " + std::to_string(nin) + " inputs";
  if (!info->outputs.admits(nout))
    return "has " + std::to_string(nout) + " outputs";
  for (int i = 0; i < nin; ++i)
    if (k.inputs()->Get(i) == -1 && !info->optional(i))
      return "input " + std::to_string(i) + " is absent but not optional";
  if (k.attrs_type() != info->attrs ||
      (info->attrs != Attrs::NONE && !k.attrs()))
    return std::string("carries attributes ") + attrsName(k.attrs_type()) +
           ", not " + attrsName(info->attrs);
  return "";
}
