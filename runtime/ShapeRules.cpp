//===- ShapeRules.cpp - op signatures and run-time shape rules ------------===//
//
// What load-time verification checks for each op (signatureOf) and the
// output shapes each kernel computes once a call binds its symbolic
// dimensions (inferShapes), with the run-time sizes the kernels rely on.
//
//===----------------------------------------------------------------------===//
#include "runtime/cpu/KernelUtil.h"

#include <map>

using namespace kiln;
using namespace kiln::runtime;
using namespace kiln::runtime::cpu;
using kart::Op;

namespace {
const Shape kNone;
} // namespace

int64_t View::numel() const { return shape ? numelOf(*shape) : 0; }

int64_t kiln::runtime::evalDim(const kart::Dim *d,
                               const std::vector<int64_t> &symbols) {
  int64_t v = d->factor();
  if (d->symbols())
    for (uint32_t s : *d->symbols())
      v *= symbols[s];
  return v;
}

//===----------------------------------------------------------------------===//
// Signatures
//===----------------------------------------------------------------------===//

const OpSignature &kiln::runtime::signatureOf(Op op) {
  static const std::map<Op, OpSignature> table = {
      {Op::Embedding, {2, 2, 1, 0, 0, 0, 0, false}},
      {Op::Matmul, {2, 2, 1, 2, 0, 0, 0, false}},
      {Op::Add, {2, 2, 1, 0, 0, 0, 0, false}},
      {Op::Sub, {2, 2, 1, 0, 0, 0, 0, false}},
      {Op::Mul, {2, 2, 1, 0, 0, 0, 0, false}},
      {Op::Div, {2, 2, 1, 0, 0, 0, 0, false}},
      {Op::Max, {2, 2, 1, 0, 0, 0, 0, false}},
      {Op::Min, {2, 2, 1, 0, 0, 0, 0, false}},
      {Op::Pow, {2, 2, 1, 0, 0, 0, 0, false}},
      {Op::Neg, {1, 1, 1, 0, 0, 0, 0, false}},
      {Op::Exp, {1, 1, 1, 0, 0, 0, 0, false}},
      {Op::Log, {1, 1, 1, 0, 0, 0, 0, false}},
      {Op::Sqrt, {1, 1, 1, 0, 0, 0, 0, false}},
      {Op::Rsqrt, {1, 1, 1, 0, 0, 0, 0, false}},
      {Op::Tanh, {1, 1, 1, 0, 0, 0, 0, false}},
      {Op::Sigmoid, {1, 1, 1, 0, 0, 0, 0, false}},
      {Op::Relu, {1, 1, 1, 0, 0, 0, 0, false}},
      {Op::Silu, {1, 1, 1, 0, 0, 0, 0, false}},
      {Op::Gelu, {1, 1, 1, 0, 0, 0, 0, true}},
      {Op::Cast, {1, 1, 1, 0, 0, 0, 0, false}},
      {Op::Reshape, {1, 1, 1, 0, 0, 0, -1, false, 0, 0}},
      {Op::Transpose, {1, 1, 1, -1, 1, 0, 0, false}},
      {Op::Slice, {1, 1, 1, 2, 0, 0, 1, false}},
      {Op::Concat, {1, -1, 1, 1, 0, 0, 0, false}},
      {Op::Split, {1, 1, -1, 1, 0, 0, 0, false}},
      {Op::ReduceSum, {1, 1, 1, -1, 2, 0, 0, false}},
      {Op::ReduceMean, {1, 1, 1, -1, 2, 0, 0, false}},
      {Op::ReduceMax, {1, 1, 1, -1, 2, 0, 0, false}},
      {Op::LayerNorm, {3, 3, 1, 0, 0, 1, 0, false}},
      {Op::RMSNorm, {2, 2, 1, 0, 0, 1, 0, false}},
      {Op::Softmax, {1, 1, 1, 1, 0, 0, 0, false}},
      {Op::Dropout, {1, 1, 1, 1, 0, 1, 0, false}},
      {Op::Rope, {2, 2, 1, -1, 1, 1, 0, true}},
      {Op::Attention, {5, 5, -1, 3, 0, 1, 0, false}},
      {Op::RelativePositionBucket, {2, 2, 1, 3, 0, 0, 0, false}},
      {Op::CrossEntropy, {2, 2, 1, 1, 0, 0, 0, false}},
      {Op::CrossEntropyGrad, {3, 3, 1, 1, 0, 0, 0, false}},
      {Op::EmbeddingGrad, {2, 2, 1, 1, 0, 0, 0, false}},
      {Op::ActivationGrad, {2, 2, 1, 0, 0, 0, 0, true}},
      {Op::SliceGrad, {2, 2, 1, 2, 0, 0, 0, false}},
      {Op::ReshapeLike, {2, 2, 1, 0, 0, 0, 0, false, 0, 0}},
      {Op::ZerosLike, {1, 1, 1, 0, 0, 0, 0, false}},
      {Op::ReduceGrad, {2, 2, 1, -1, 2, 0, 0, true}},
      {Op::ConcatGrad, {2, -1, -1, 1, 0, 0, 0, false}},
      {Op::AttentionGrad, {8, 8, -1, 3, 0, 1, 0, false}},
      {Op::GlobalNorm, {1, -1, 1, 0, 0, 0, 0, false}},
      {Op::OptimizerUpdate, {5, 5, 0, 0, 0, 6, 0, true}},
      {Op::FusedMatmul, {4, 4, 1, 3, 0, 1, 0, true}},
      {Op::AddNorm, {4, 4, 2, 0, 0, 1, 0, true}},
      {Op::NormGrad, {3, 3, 3, 0, 0, 1, 0, true}},
      {Op::SoftmaxCrossEntropy, {3, 3, 2, 1, 0, 0, 0, false, 0, 1}},
      {Op::FusedElementwise, {1, -1, 1, -1, 2, -1, 0, false}},
  };
  return table.at(op);
}

//===----------------------------------------------------------------------===//
// Shape rules
//===----------------------------------------------------------------------===//

namespace {
/// The shape of a reduction of `x` (ints [keepdim, axes...]).
Shape reducedShape(const kart::Kernel &k, const Shape &x) {
  bool keep = ival(k, 0);
  std::vector<bool> red(x.size(), false);
  for (size_t i = 1; i < k.ints()->size(); ++i)
    red[normAxis(ival(k, i), x.size())] = true;
  Shape s;
  for (size_t d = 0; d < x.size(); ++d)
    if (!red[d])
      s.push_back(x[d]);
    else if (keep)
      s.push_back(1);
  return s;
}
/// The operand shapes attention and its gradient share: q, k, v and the
/// optional mask and bias (null when absent).
Status checkAttention(const kart::Kernel &k, const Shape &q, const Shape &kk,
                      const Shape &v, const Shape *mask, const Shape *bias) {
  int64_t h = ival(k, 0), kvh = ival(k, 1);
  if (q[2] % h || kk[2] != kvh * (q[2] / h) || v[2] % kvh || kk[0] != q[0] ||
      v[0] != q[0] || kk[1] != v[1])
    return fail(k, "q " + str(q) + ", k " + str(kk) + " and v " + str(v) +
                       " do not fit " + std::to_string(h) + " heads and " +
                       std::to_string(kvh) + " key/value heads");
  if (mask && (mask->size() != 2 || (*mask)[0] != q[0] || (*mask)[1] != kk[1]))
    return fail(k, "mask " + str(*mask) + " is not [B, Tk]");
  if (bias) {
    Shape full = {q[0], h, q[1], kk[1]}, b;
    if (!broadcast(full, *bias, b) || b != full)
      return fail(k,
                  "bias " + str(*bias) + " does not broadcast to " + str(full));
  }
  return Status::ok();
}
} // namespace

Status kiln::runtime::inferShapes(const kart::Kernel &k,
                                  const std::vector<const Shape *> &in,
                                  const std::vector<int64_t> &symbols,
                                  std::vector<Shape> &out) {
  auto shape = [&](size_t i) -> const Shape & {
    return in[i] ? *in[i] : kNone;
  };
  out.clear();
  if (isBinary(k.op())) {
    Shape s;
    if (!broadcast(shape(0), shape(1), s))
      return fail(k, "shapes " + str(shape(0)) + " and " + str(shape(1)) +
                         " do not broadcast");
    out.push_back(s);
    return Status::ok();
  }
  if (isUnary(k.op())) {
    out.push_back(shape(0));
    return Status::ok();
  }
  switch (k.op()) {
  case Op::Embedding: {
    if (shape(0).size() != 2)
      return fail(k, "table must be [V, D], got " + str(shape(0)));
    Shape s = shape(1);
    s.push_back(shape(0)[1]);
    out.push_back(s);
    return Status::ok();
  }
  case Op::Matmul: {
    const Shape &a = shape(0), &b = shape(1);
    if (a.size() < 2 || b.size() < 2)
      return fail(k,
                  "operands need rank >= 2, got " + str(a) + " and " + str(b));
    bool ta = ival(k, 0), tb = ival(k, 1);
    int64_t m = ta ? a[a.size() - 1] : a[a.size() - 2];
    int64_t ka = ta ? a[a.size() - 2] : a[a.size() - 1];
    int64_t kb = tb ? b[b.size() - 1] : b[b.size() - 2];
    int64_t n = tb ? b[b.size() - 2] : b[b.size() - 1];
    if (ka != kb)
      return fail(k, "contraction sizes differ: " + str(a) + " x " + str(b));
    Shape batch;
    if (!broadcast(Shape(a.begin(), a.end() - 2), Shape(b.begin(), b.end() - 2),
                   batch))
      return fail(k, "batch dimensions do not broadcast: " + str(a) + " x " +
                         str(b));
    batch.push_back(m);
    batch.push_back(n);
    out.push_back(batch);
    return Status::ok();
  }
  case Op::LayerNorm:
  case Op::RMSNorm:
    for (size_t i = 1; i < in.size(); ++i)
      if (shape(i).size() != 1 || shape(i)[0] != shape(0).back())
        return fail(k, "weight " + str(shape(i)) + " does not match input " +
                           str(shape(0)));
    out.push_back(shape(0));
    return Status::ok();
  case Op::Rope: {
    const Shape &x = shape(0);
    if (x[2] % ival(k, 0))
      return fail(k, "width " + std::to_string(x[2]) +
                         " is not a multiple of head_dim");
    if (in[1]) {
      const Shape &p = shape(1);
      bool ok = (p.size() == 1 && p[0] == x[1]) ||
                (p.size() == 2 && p[0] == x[0] && p[1] == x[1]);
      if (!ok)
        return fail(k, "positions " + str(p) + " do not match " + str(x));
    }
    out.push_back(x);
    return Status::ok();
  }
  case Op::Cast:
  case Op::Softmax:
  case Op::Dropout:
    out.push_back(shape(0));
    return Status::ok();
  case Op::Reshape: {
    Shape s;
    for (const kart::Dim *d : *k.dims())
      s.push_back(evalDim(d, symbols));
    if (numelOf(s) != numelOf(shape(0)))
      return fail(k, "cannot reshape " + str(shape(0)) + " to " + str(s));
    out.push_back(s);
    return Status::ok();
  }
  case Op::Transpose: {
    Shape s;
    for (int64_t p : *k.ints())
      s.push_back(shape(0)[p]);
    out.push_back(s);
    return Status::ok();
  }
  case Op::Slice: {
    Shape s = shape(0);
    int64_t axis = normAxis(ival(k, 0), s.size()), start = ival(k, 1);
    int64_t end = evalDim(k.dims()->Get(0), symbols);
    if (end > s[axis] || start >= end)
      return fail(k, "slice [" + std::to_string(start) + ", " +
                         std::to_string(end) + ") is outside dimension " +
                         std::to_string(axis) + " of " + str(s) +
                         " (is a run-time length larger than the model "
                         "allows?)");
    s[axis] = end - start;
    out.push_back(s);
    return Status::ok();
  }
  case Op::Concat: {
    Shape s = shape(0);
    int64_t axis = normAxis(ival(k, 0), s.size());
    for (size_t i = 1; i < in.size(); ++i) {
      const Shape &t = shape(i);
      for (size_t d = 0; d < s.size(); ++d)
        if (d != static_cast<size_t>(axis) && t[d] != s[d])
          return fail(k, "inputs " + str(shape(0)) + " and " + str(t) +
                             " differ outside the axis");
      s[axis] += t[axis];
    }
    out.push_back(s);
    return Status::ok();
  }
  case Op::Split: {
    Shape s = shape(0);
    int64_t axis = normAxis(ival(k, 0), s.size());
    int64_t parts = k.outputs()->size();
    if (s[axis] % parts)
      return fail(k, "dimension " + std::to_string(s[axis]) +
                         " does not split into " + std::to_string(parts));
    s[axis] /= parts;
    out.assign(parts, s);
    return Status::ok();
  }
  case Op::ReduceSum:
  case Op::ReduceMean:
  case Op::ReduceMax: {
    out.push_back(reducedShape(k, shape(0)));
    return Status::ok();
  }
  case Op::Attention: {
    const Shape &q = shape(0), &kk = shape(1), &v = shape(2);
    int64_t h = ival(k, 0), kvh = ival(k, 1);
    if (Status st = checkAttention(k, q, kk, v, in[3], in[4]); !st)
      return st;
    out.push_back({q[0], q[1], v[2] / kvh * h});
    if (k.outputs()->size() > 1)
      out.push_back({q[0], h, q[1]});
    return Status::ok();
  }
  case Op::EmbeddingGrad: {
    const Shape &g = shape(0), &ids = shape(1);
    if (g.size() != ids.size() + 1 ||
        !std::equal(ids.begin(), ids.end(), g.begin()))
      return fail(k,
                  "gradient " + str(g) + " does not match indices " + str(ids));
    out.push_back({ival(k, 0), g.back()});
    return Status::ok();
  }
  case Op::ActivationGrad:
    if (shape(0) != shape(1))
      return fail(k, "gradient " + str(shape(0)) + " and input " +
                         str(shape(1)) + " differ");
    out.push_back(shape(1));
    return Status::ok();
  case Op::ZerosLike:
    out.push_back(shape(0));
    return Status::ok();
  case Op::ReshapeLike:
    if (numelOf(shape(0)) != numelOf(shape(1)))
      return fail(k,
                  "cannot reshape " + str(shape(0)) + " like " + str(shape(1)));
    out.push_back(shape(1));
    return Status::ok();
  case Op::SliceGrad: {
    const Shape &g = shape(0), &like = shape(1);
    int64_t axis = normAxis(ival(k, 0), like.size()), start = ival(k, 1);
    bool ok = g.size() == like.size() && start + g[axis] <= like[axis];
    for (size_t d = 0; ok && d < g.size(); ++d)
      ok = d == static_cast<size_t>(axis) || g[d] == like[d];
    if (!ok)
      return fail(k, "gradient " + str(g) + " does not fit " + str(like) +
                         " at " + std::to_string(start));
    out.push_back(like);
    return Status::ok();
  }
  case Op::ReduceGrad: {
    const Shape &g = shape(0), &x = shape(1);
    if (reducedShape(k, x) != g)
      return fail(k,
                  "gradient " + str(g) + " is not the reduction of " + str(x));
    out.push_back(x);
    return Status::ok();
  }
  case Op::ConcatGrad: {
    const Shape &g = shape(0);
    int64_t axis = normAxis(ival(k, 0), g.size()), total = 0;
    for (size_t i = 1; i < in.size(); ++i) {
      const Shape &t = shape(i);
      for (size_t d = 0; d < g.size(); ++d)
        if (d != static_cast<size_t>(axis) && t[d] != g[d])
          return fail(k, "input " + str(t) + " does not match the gradient " +
                             str(g));
      total += t[axis];
      out.push_back(t);
    }
    if (total != g[axis])
      return fail(k, "inputs do not add up to the gradient " + str(g));
    return Status::ok();
  }
  case Op::GlobalNorm:
    out.push_back({});
    return Status::ok();
  case Op::OptimizerUpdate:
    if (shape(0) != shape(1))
      return fail(k, "gradient " + str(shape(1)) +
                         " does not match the parameter " + str(shape(0)));
    return Status::ok();
  case Op::AttentionGrad: {
    const Shape &q = shape(1), &kk = shape(2), &v = shape(3);
    int64_t h = ival(k, 0), kvh = ival(k, 1);
    if (Status st = checkAttention(k, q, kk, v, in[6], in[7]); !st)
      return st;
    Shape o = {q[0], q[1], v[2] / kvh * h}, l = {q[0], h, q[1]};
    if (shape(0) != o || shape(4) != o || shape(5) != l)
      return fail(k, "gradient " + str(shape(0)) + ", output " + str(shape(4)) +
                         " or lse " + str(shape(5)) + " do not match q " +
                         str(q));
    out = {q, kk, v};
    if (in[7])
      out.push_back(shape(7));
    return Status::ok();
  }
  case Op::RelativePositionBucket:
    out.push_back(
        {shape(0)[shape(0).size() - 2], shape(1)[shape(1).size() - 2]});
    return Status::ok();
  case Op::CrossEntropy:
  case Op::CrossEntropyGrad:
    if (Shape(shape(0).begin(), shape(0).end() - 1) != shape(1))
      return fail(k, "targets " + str(shape(1)) + " do not match logits " +
                         str(shape(0)));
    out.push_back(k.op() == Op::CrossEntropy ? Shape() : shape(0));
    return Status::ok();
  case Op::FusedMatmul:
  case Op::AddNorm:
  case Op::NormGrad:
  case Op::SoftmaxCrossEntropy:
  case Op::FusedElementwise:
    return inferFusedShapes(k, in, out);
  default:
    break;
  }
  return fail(k, "unknown op");
}
