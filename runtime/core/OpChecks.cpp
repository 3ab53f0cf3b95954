//===- OpChecks.cpp - load-time checks of each op -------------------------===//
//
// Ranks and element types are static in an artifact: each rule checks what
// its kernels rely on, so a kernel never meets an operand it cannot read.
// The op table (core/OpTable.cpp) has already checked the operand counts,
// the optional operands and the attribute table's type.
//
//===----------------------------------------------------------------------===//
#include "runtime/Kernels.h"
#include "runtime/attention/KartPattern.h"
#include "runtime/core/OpRules.h"

#include <set>

using namespace kiln;
using namespace kiln::runtime;
using kart::Op;
using Operands = kiln::runtime::KernelOperands;

namespace {

int64_t rank(const kart::Value *v) {
  return static_cast<int64_t>(v->shape()->size());
}
bool isF32(const kart::Value *v) { return v->dtype() == kart::DType::F32; }
bool isInt(const kart::Value *v) {
  return v->dtype() == kart::DType::I32 || v->dtype() == kart::DType::I64;
}
bool axisOk(int64_t axis, int64_t r) { return axis >= -r && axis < r; }

/// A dimension expression an attribute carries: a positive factor over
/// symbols the program declares.
bool dimOk(const kart::Dim *d, size_t numSymbols) {
  if (!d || d->factor() <= 0)
    return false;
  if (d->symbols())
    for (uint32_t s : *d->symbols())
      if (s >= numSymbols)
        return false;
  return true;
}

/// Attention's optional key mask and additive bias (null when absent).
std::string checkMaskAndBias(const kart::Value *mask, const kart::Value *bias) {
  if (mask && (rank(mask) != 2 || mask->dtype() == kart::DType::F16 ||
               mask->dtype() == kart::DType::BF16))
    return "mask must be a [B, Tk] tensor";
  if (bias && ((rank(bias) != 3 && rank(bias) != 4) || !isF32(bias)))
    return "bias must be an f32 tensor of rank 3 or 4";
  return "";
}

/// What attention and its gradient share: head counts and the pattern.
std::string checkAttentionAttrs(const kart::AttentionAttrs &a) {
  if (a.heads() <= 0 || a.kv_heads() <= 0 || a.heads() % a.kv_heads())
    return "head counts are invalid";
  kart::PatternKind kind = a.pattern()->kind();
  if (kind < kart::PatternKind::MIN || kind > kart::PatternKind::MAX)
    return "uses attention pattern kind " +
           std::to_string(static_cast<int>(kind)) +
           ", which this runtime does not implement (it knows " +
           attention::patternKindList() +
           "); recompile the model with this "
           "kiln";
  std::string bad = attention::checkPattern(attention::specOf(*a.pattern()));
  if (!bad.empty())
    return "has an invalid attention pattern: " + bad;
  return "";
}

} // namespace

namespace kiln::runtime::rules {

std::string checkBinary(const Operands &o) {
  const auto &in = o.in;
  if (in[0]->dtype() != in[1]->dtype() || o.out[0]->dtype() != in[0]->dtype() ||
      !(isF32(in[0]) || isInt(in[0])))
    return "needs operands and result of one type (f32, i32 or i64)";
  return "";
}

std::string checkUnary(const Operands &o) {
  if (!isF32(o.in[0]) || !isF32(o.out[0]))
    return "needs f32 operands";
  if (o.kernel.op() == Op::Gelu) {
    auto form = o.kernel.attrs_as_GeluAttrs()->approximation();
    if (form != kart::GeluApproximation::None &&
        form != kart::GeluApproximation::Tanh)
      return "has an unknown GELU form";
  }
  return "";
}

std::string checkEmbedding(const Operands &o) {
  if (rank(o.in[0]) != 2 || !isF32(o.in[0]) || !isInt(o.in[1]) ||
      !isF32(o.out[0]))
    return "needs an f32 [V, D] table, integer ids and an f32 result";
  return "";
}

std::string checkMatmul(const Operands &o) {
  if (rank(o.in[0]) < 2 || rank(o.in[1]) < 2 || !isF32(o.in[0]) ||
      !isF32(o.in[1]) || !isF32(o.out[0]))
    return "needs f32 operands of rank >= 2";
  return "";
}

std::string checkSameType(const Operands &o) {
  if (o.out[0]->dtype() != o.in[0]->dtype())
    return "changes the element type";
  return "";
}

std::string checkReshape(const Operands &o) {
  const auto *shape = o.kernel.attrs_as_ReshapeAttrs()->shape();
  for (size_t i = 0; i < shape->size(); ++i)
    if (!dimOk(shape->Get(i), o.numSymbols))
      return "target dimension " + std::to_string(i) + " is invalid";
  if (shape->size() == 0 && rank(o.out[0]) != 0)
    return "has no target shape";
  return checkSameType(o);
}

std::string checkTranspose(const Operands &o) {
  const auto *perm = o.kernel.attrs_as_TransposeAttrs()->perm();
  std::set<int64_t> seen;
  for (int64_t p : *perm)
    if (p < 0 || p >= rank(o.in[0]) || !seen.insert(p).second)
      return "perm is not a permutation of the input's dimensions";
  if (static_cast<int64_t>(perm->size()) != rank(o.in[0]) ||
      o.out[0]->dtype() != o.in[0]->dtype())
    return "perm does not match the input";
  return "";
}

std::string checkSlice(const Operands &o) {
  const kart::SliceAttrs *a = o.kernel.attrs_as_SliceAttrs();
  if (!dimOk(a->end(), o.numSymbols))
    return "the slice end is invalid";
  if (!axisOk(a->axis(), rank(o.in[0])) || a->start() < 0 ||
      o.out[0]->dtype() != o.in[0]->dtype())
    return "axis or start is out of range";
  return "";
}

namespace {
std::string checkPieces(const std::vector<const kart::Value *> &pieces,
                        const kart::Value *whole, int64_t axis) {
  for (const kart::Value *v : pieces)
    if (rank(v) != rank(whole) || v->dtype() != whole->dtype())
      return "operands differ in rank or element type";
  if (!axisOk(axis, rank(whole)))
    return "axis is out of range";
  return "";
}
} // namespace

std::string checkConcat(const Operands &o) {
  return checkPieces(o.in, o.out[0], o.kernel.attrs_as_AxisAttrs()->axis());
}

std::string checkSplit(const Operands &o) {
  return checkPieces(o.out, o.in[0], o.kernel.attrs_as_AxisAttrs()->axis());
}

std::string checkReduce(const Operands &o) {
  for (int64_t a : *o.kernel.attrs_as_ReduceAttrs()->axes())
    if (!axisOk(a, rank(o.in[0])))
      return "axis is out of range";
  if (!isF32(o.in[0]) || !isF32(o.out[0]))
    return "needs f32 operands";
  return "";
}

std::string checkSoftmax(const Operands &o) {
  if (!axisOk(o.kernel.attrs_as_AxisAttrs()->axis(), rank(o.in[0])) ||
      !isF32(o.in[0]) || !isF32(o.out[0]))
    return "needs f32 operands and an axis in range";
  return "";
}

std::string checkNorm(const Operands &o) {
  for (size_t i = 1; i < o.in.size(); ++i)
    if (rank(o.in[i]) != 1 || !isF32(o.in[i]))
      return "weight and bias must be f32 vectors";
  if (rank(o.in[0]) < 1 || !isF32(o.in[0]) || !isF32(o.out[0]))
    return "needs an f32 input of rank >= 1";
  return "";
}

std::string checkRope(const Operands &o) {
  const kart::RopeAttrs *a = o.kernel.attrs_as_RopeAttrs();
  const kart::Value *pos = o.in[1];
  if (rank(o.in[0]) != 3 || !isF32(o.in[0]) || !isF32(o.out[0]) ||
      a->head_dim() <= 0 || a->head_dim() % 2 ||
      (pos && (!isInt(pos) || rank(pos) < 1 || rank(pos) > 2)))
    return "needs f32 [B, T, C], an even head_dim and [T] or [B, T] "
           "integer positions";
  if (a->style() != kart::RopeStyle::Interleaved &&
      a->style() != kart::RopeStyle::Half)
    return "has an unknown rotary style";
  return "";
}

std::string checkAttention(const Operands &o) {
  const auto &in = o.in;
  for (int i = 0; i < 3; ++i)
    if (rank(in[i]) != 3 || !isF32(in[i]))
      return "q, k and v must be f32 [B, T, C]";
  if (std::string why =
          checkAttentionAttrs(*o.kernel.attrs_as_AttentionAttrs());
      !why.empty())
    return why;
  if (!isF32(o.out[0]))
    return "needs an f32 result";
  if (std::string why = checkMaskAndBias(in[3], in[4]); !why.empty())
    return why;
  if (o.out.size() == 2 && (rank(o.out[1]) != 3 || !isF32(o.out[1])))
    return "has outputs other than the result and an f32 lse";
  return "";
}

std::string checkCachedAttention(const Operands &o) {
  const auto &in = o.in;
  for (int i = 0; i < 5; ++i)
    if (rank(in[i]) != 3 || !isF32(in[i]))
      return "q, k, v and the key and value caches must be f32 [B, T, C]";
  // The kernel writes the caches: they must be the caller's buffers, never
  // weights or constants.
  if (in[3]->kind() != kart::ValueKind::Input ||
      in[4]->kind() != kart::ValueKind::Input || in[3] == in[4])
    return "its key and value caches must be two of the function's inputs";
  if (rank(in[5]) != 2 || in[5]->dtype() != kart::DType::I32 ||
      rank(in[6]) != 1 || in[6]->dtype() != kart::DType::I32)
    return "needs i32 positions [B, T] and lengths [B]";
  const kart::AttentionAttrs &a = *o.kernel.attrs_as_AttentionAttrs();
  if (std::string why = checkAttentionAttrs(a); !why.empty())
    return why;
  const kart::AttentionPattern &p = *a.pattern();
  if (!p.causal() || p.global_tokens() != 0 ||
      (p.kind() != kart::PatternKind::Dense &&
       p.kind() != kart::PatternKind::SlidingWindow))
    return "needs causal attention, dense or with a sliding window";
  if (!isF32(o.out[0]) || rank(o.out[0]) != 3)
    return "needs an f32 [B, T, C] result";
  const kart::RelativePositionBucketAttrs *r = a.relative();
  const auto *table = in.size() > 7 ? in[7] : nullptr;
  if ((table != nullptr) != (r != nullptr))
    return "needs both or neither of a relative bias table and its buckets";
  if (r && (rank(table) != 2 || !isF32(table) || r->buckets() < 4 ||
            r->max_distance() < 2))
    return "needs an f32 [buckets, H] relative bias table, at least 4 "
           "buckets and a maximum distance of at least 2";
  return "";
}

std::string checkRelativePositionBucket(const Operands &o) {
  const kart::RelativePositionBucketAttrs *a =
      o.kernel.attrs_as_RelativePositionBucketAttrs();
  if (rank(o.in[0]) < 2 || rank(o.in[1]) < 2 || a->buckets() < 4 ||
      a->max_distance() < 2 || o.out[0]->dtype() != kart::DType::I32)
    return "needs rank >= 2 operands, valid bucket counts and an i32 result";
  return "";
}

std::string checkCrossEntropy(const Operands &o) {
  const auto &in = o.in;
  if (rank(in[0]) < 1 || !isF32(in[0]) || !isInt(in[1]) ||
      rank(in[1]) != rank(in[0]) - 1 || !isF32(o.out[0]) || rank(o.out[0]) != 0)
    return "needs f32 logits, integer targets and a scalar f32 result";
  return "";
}

std::string checkCrossEntropyGrad(const Operands &o) {
  const auto &in = o.in;
  if (rank(in[0]) < 1 || !isF32(in[0]) || !isInt(in[1]) ||
      rank(in[1]) != rank(in[0]) - 1 || !isF32(in[2]) || rank(in[2]) != 0 ||
      !isF32(o.out[0]) || rank(o.out[0]) != rank(in[0]))
    return "needs f32 logits, integer targets, a scalar f32 upstream "
           "gradient and an f32 result shaped like the logits";
  return "";
}

std::string checkEmbeddingGrad(const Operands &o) {
  const auto &in = o.in;
  if (rank(in[0]) != rank(in[1]) + 1 || !isF32(in[0]) || !isInt(in[1]) ||
      rank(o.out[0]) != 2 || !isF32(o.out[0]) ||
      o.kernel.attrs_as_EmbeddingGradAttrs()->num_embeddings() <= 0)
    return "needs an f32 gradient, integer ids and an f32 [V, D] result";
  return "";
}

std::string checkActivationGrad(const Operands &o) {
  kart::Activation kind = o.kernel.attrs_as_ActivationGradAttrs()->kind();
  if (kind == kart::Activation::None || kind > kart::Activation::MAX)
    return "has activation " + std::to_string(static_cast<int>(kind)) +
           ", which has no gradient kernel";
  if (!isF32(o.in[0]) || !isF32(o.in[1]) || !isF32(o.out[0]))
    return "needs f32 operands";
  return "";
}

std::string checkSliceGrad(const Operands &o) {
  const kart::SliceGradAttrs *a = o.kernel.attrs_as_SliceGradAttrs();
  const auto &in = o.in;
  if (!axisOk(a->axis(), rank(in[1])) || a->start() < 0 ||
      rank(in[0]) != rank(in[1]) || in[0]->dtype() != in[1]->dtype() ||
      o.out[0]->dtype() != in[1]->dtype())
    return "axis, start or operand types are invalid";
  return "";
}

std::string checkLike(const Operands &o) {
  if (o.out[0]->dtype() != o.in.back()->dtype() ||
      o.in[0]->dtype() != o.out[0]->dtype())
    return "changes the element type";
  return "";
}

std::string checkReduceGrad(const Operands &o) {
  const kart::ReduceGradAttrs *a = o.kernel.attrs_as_ReduceGradAttrs();
  if (a->kind() > kart::ReduceKind::MAX)
    return "has an unknown reduction";
  for (int64_t axis : *a->axes())
    if (!axisOk(axis, rank(o.in[1])))
      return "axis is out of range";
  if (!isF32(o.in[0]) || !isF32(o.in[1]) || !isF32(o.out[0]))
    return "needs f32 operands";
  return "";
}

std::string checkConcatGrad(const Operands &o) {
  const auto &in = o.in;
  if (o.out.size() != in.size() - 1 ||
      !axisOk(o.kernel.attrs_as_AxisAttrs()->axis(), rank(in[0])))
    return "needs one output per input piece and an axis in range";
  for (size_t i = 1; i < in.size(); ++i)
    if (rank(in[i]) != rank(in[0]) || in[i]->dtype() != in[0]->dtype() ||
        o.out[i - 1]->dtype() != in[0]->dtype())
      return "operands differ in rank or element type";
  return "";
}

std::string checkAttentionGrad(const Operands &o) {
  const auto &in = o.in;
  for (int i = 0; i < 5; ++i)
    if (rank(in[i]) != 3 || !isF32(in[i]))
      return "gradient, q, k, v and output must be f32 [B, T, C]";
  if (rank(in[5]) != 3 || !isF32(in[5]))
    return "lse must be f32 [B, H, Tq]";
  if (std::string why =
          checkAttentionAttrs(*o.kernel.attrs_as_AttentionAttrs());
      !why.empty())
    return why;
  if (std::string why = checkMaskAndBias(in[6], in[7]); !why.empty())
    return why;
  if (o.out.size() != (in[7] ? 4u : 3u))
    return "needs a gradient for q, k, v and, with a bias, the bias";
  for (const kart::Value *v : o.out)
    if (!isF32(v))
      return "gradients must be f32";
  return "";
}

std::string checkGlobalNorm(const Operands &o) {
  for (const kart::Value *v : o.in)
    if (!isF32(v))
      return "needs f32 operands";
  if (!isF32(o.out[0]) || rank(o.out[0]) != 0)
    return "needs a scalar f32 result";
  return "";
}

std::string checkOptimizerUpdate(const Operands &o) {
  const auto &in = o.in;
  kart::OptimizerKind kind = o.kernel.attrs_as_OptimizerAttrs()->kind();
  if (kind != kart::OptimizerKind::AdamW && kind != kart::OptimizerKind::SGD)
    return "has an unknown optimizer " + std::to_string(static_cast<int>(kind));
  if (in[0]->kind() != kart::ValueKind::Parameter)
    return "must update a parameter";
  if (!isF32(in[0]) || !isF32(in[1]) || rank(in[0]) != rank(in[1]))
    return "needs an f32 parameter and a gradient of its shape";
  for (int i = 2; i < 5; ++i)
    if (!isF32(in[i]) || rank(in[i]) != 0)
      return "grad_norm, lr and step must be scalar f32 values";
  return "";
}

std::string checkFused(const Operands &o) {
  std::vector<FusedOperand> ins, outs;
  for (const kart::Value *v : o.in)
    ins.push_back(v ? FusedOperand{true, isF32(v), isInt(v), rank(v)}
                    : FusedOperand{});
  for (const kart::Value *v : o.out)
    outs.push_back({true, isF32(v), isInt(v), rank(v)});
  return checkFusedKernel(o.kernel, ins, outs);
}

} // namespace kiln::runtime::rules
