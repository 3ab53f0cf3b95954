//===- ShapeRules.cpp - run-time shape rules ------------------------------===//
//
// The output shapes each kernel computes once a call binds its symbolic
// dimensions, with the run-time sizes the kernels rely on. Each op's rule
// is named by its row in the op table (core/OpTable.cpp).
//
//===----------------------------------------------------------------------===//
#include "runtime/core/OpRules.h"
#include "runtime/cpu/KernelUtil.h"

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
// Shape rules
//===----------------------------------------------------------------------===//

namespace {
/// The shape of a reduction of `x` over `axes`.
Shape reducedShape(bool keep, const flatbuffers::Vector<int64_t> &axes,
                   const Shape &x) {
  std::vector<bool> red(x.size(), false);
  for (int64_t a : axes)
    red[normAxis(a, x.size())] = true;
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
Status checkAttentionShapes(const kart::Kernel &k, const Shape &q,
                            const Shape &kk, const Shape &v, const Shape *mask,
                            const Shape *bias) {
  const kart::AttentionAttrs *a = k.attrs_as_AttentionAttrs();
  int64_t h = a->heads(), kvh = a->kv_heads();
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
const Shape &shapeOf(const std::vector<const Shape *> &in, size_t i) {
  return in[i] ? *in[i] : kNone;
}
} // namespace

#define RULE(name)                                                             \
  Status kiln::runtime::rules::name(                                           \
      const kart::Kernel &k, const std::vector<const Shape *> &in,             \
      const std::vector<int64_t> &symbols, std::vector<Shape> &out)

RULE(shapeBinary) {
  Shape s;
  if (!broadcast(shapeOf(in, 0), shapeOf(in, 1), s))
    return fail(k, "shapes " + str(shapeOf(in, 0)) + " and " +
                       str(shapeOf(in, 1)) + " do not broadcast");
  out.push_back(s);
  return Status::ok();
}

RULE(shapeLikeFirst) {
  out.push_back(shapeOf(in, 0));
  return Status::ok();
}

RULE(shapeEmbedding) {
  const Shape &table = shapeOf(in, 0);
  if (table.size() != 2)
    return fail(k, "table must be [V, D], got " + str(table));
  Shape s = shapeOf(in, 1);
  s.push_back(table[1]);
  out.push_back(s);
  return Status::ok();
}

RULE(shapeMatmul) {
  const Shape &a = shapeOf(in, 0), &b = shapeOf(in, 1);
  if (a.size() < 2 || b.size() < 2)
    return fail(k, "operands need rank >= 2, got " + str(a) + " and " + str(b));
  const kart::MatmulAttrs *attrs = k.attrs_as_MatmulAttrs();
  bool ta = attrs->transpose_a(), tb = attrs->transpose_b();
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

RULE(shapeNorm) {
  for (size_t i = 1; i < in.size(); ++i)
    if (shapeOf(in, i).size() != 1 ||
        shapeOf(in, i)[0] != shapeOf(in, 0).back())
      return fail(k, "weight " + str(shapeOf(in, i)) +
                         " does not match input " + str(shapeOf(in, 0)));
  out.push_back(shapeOf(in, 0));
  return Status::ok();
}

RULE(shapeRope) {
  const Shape &x = shapeOf(in, 0);
  if (x[2] % k.attrs_as_RopeAttrs()->head_dim())
    return fail(k, "width " + std::to_string(x[2]) +
                       " is not a multiple of head_dim");
  if (in[1]) {
    const Shape &p = *in[1];
    bool ok = (p.size() == 1 && p[0] == x[1]) ||
              (p.size() == 2 && p[0] == x[0] && p[1] == x[1]);
    if (!ok)
      return fail(k, "positions " + str(p) + " do not match " + str(x));
  }
  out.push_back(x);
  return Status::ok();
}

RULE(shapeReshape) {
  Shape s;
  for (const kart::Dim *d : *k.attrs_as_ReshapeAttrs()->shape())
    s.push_back(evalDim(d, symbols));
  if (numelOf(s) != numelOf(shapeOf(in, 0)))
    return fail(k, "cannot reshape " + str(shapeOf(in, 0)) + " to " + str(s));
  out.push_back(s);
  return Status::ok();
}

RULE(shapeTranspose) {
  Shape s;
  for (int64_t p : *k.attrs_as_TransposeAttrs()->perm())
    s.push_back(shapeOf(in, 0)[p]);
  out.push_back(s);
  return Status::ok();
}

RULE(shapeSlice) {
  const kart::SliceAttrs *a = k.attrs_as_SliceAttrs();
  Shape s = shapeOf(in, 0);
  int64_t axis = normAxis(a->axis(), s.size()), start = a->start();
  int64_t end = evalDim(a->end(), symbols);
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

RULE(shapeConcat) {
  Shape s = shapeOf(in, 0);
  int64_t axis = normAxis(k.attrs_as_AxisAttrs()->axis(), s.size());
  for (size_t i = 1; i < in.size(); ++i) {
    const Shape &t = shapeOf(in, i);
    for (size_t d = 0; d < s.size(); ++d)
      if (d != static_cast<size_t>(axis) && t[d] != s[d])
        return fail(k, "inputs " + str(shapeOf(in, 0)) + " and " + str(t) +
                           " differ outside the axis");
    s[axis] += t[axis];
  }
  out.push_back(s);
  return Status::ok();
}

RULE(shapeSplit) {
  Shape s = shapeOf(in, 0);
  int64_t axis = normAxis(k.attrs_as_AxisAttrs()->axis(), s.size());
  int64_t parts = k.outputs()->size();
  if (s[axis] % parts)
    return fail(k, "dimension " + std::to_string(s[axis]) +
                       " does not split into " + std::to_string(parts));
  s[axis] /= parts;
  out.assign(parts, s);
  return Status::ok();
}

RULE(shapeReduce) {
  const kart::ReduceAttrs *a = k.attrs_as_ReduceAttrs();
  out.push_back(reducedShape(a->keepdim(), *a->axes(), shapeOf(in, 0)));
  return Status::ok();
}

RULE(shapeAttention) {
  const Shape &q = shapeOf(in, 0), &kk = shapeOf(in, 1), &v = shapeOf(in, 2);
  const kart::AttentionAttrs *a = k.attrs_as_AttentionAttrs();
  int64_t h = a->heads(), kvh = a->kv_heads();
  if (Status st = checkAttentionShapes(k, q, kk, v, in[3], in[4]); !st)
    return st;
  out.push_back({q[0], q[1], v[2] / kvh * h});
  if (k.outputs()->size() > 1)
    out.push_back({q[0], h, q[1]});
  return Status::ok();
}

RULE(shapeCachedAttention) {
  const Shape &q = shapeOf(in, 0), &kk = shapeOf(in, 1), &v = shapeOf(in, 2),
              &kc = shapeOf(in, 3), &vc = shapeOf(in, 4), &pos = shapeOf(in, 5),
              &len = shapeOf(in, 6);
  const kart::AttentionAttrs *a = k.attrs_as_AttentionAttrs();
  if (Status st = checkAttentionShapes(k, q, kk, v, nullptr, nullptr); !st)
    return st;
  if (kk[1] != q[1])
    return fail(k, "q " + str(q) + " and k " + str(kk) +
                       " must hold the same new tokens");
  if (kc.size() != 3 || vc.size() != 3 || kc[0] != q[0] || vc[0] != q[0] ||
      kc[1] != vc[1] || kc[2] != kk[2] || vc[2] != v[2])
    return fail(k, "the key cache " + str(kc) + " and value cache " + str(vc) +
                       " must be [B, S, width] for keys " + str(kk) +
                       " and values " + str(v));
  if (pos != Shape{q[0], q[1]} || len != Shape{q[0]})
    return fail(k, "positions " + str(pos) + " and lengths " + str(len) +
                       " must be [B, T] and [B] for queries " + str(q));
  if (in.size() > 7 && in[7] &&
      *in[7] != Shape{a->relative()->buckets(), a->heads()})
    return fail(k, "the relative bias table " + str(*in[7]) + " must be [" +
                       std::to_string(a->relative()->buckets()) + ", " +
                       std::to_string(a->heads()) + "]");
  out.push_back({q[0], q[1], v[2] / a->kv_heads() * a->heads()});
  return Status::ok();
}

RULE(shapeEmbeddingGrad) {
  const Shape &g = shapeOf(in, 0), &ids = shapeOf(in, 1);
  if (g.size() != ids.size() + 1 ||
      !std::equal(ids.begin(), ids.end(), g.begin()))
    return fail(k,
                "gradient " + str(g) + " does not match indices " + str(ids));
  out.push_back({k.attrs_as_EmbeddingGradAttrs()->num_embeddings(), g.back()});
  return Status::ok();
}

RULE(shapeActivationGrad) {
  if (shapeOf(in, 0) != shapeOf(in, 1))
    return fail(k, "gradient " + str(shapeOf(in, 0)) + " and input " +
                       str(shapeOf(in, 1)) + " differ");
  out.push_back(shapeOf(in, 1));
  return Status::ok();
}

RULE(shapeReshapeLike) {
  if (numelOf(shapeOf(in, 0)) != numelOf(shapeOf(in, 1)))
    return fail(k, "cannot reshape " + str(shapeOf(in, 0)) + " like " +
                       str(shapeOf(in, 1)));
  out.push_back(shapeOf(in, 1));
  return Status::ok();
}

RULE(shapeSliceGrad) {
  const Shape &g = shapeOf(in, 0), &like = shapeOf(in, 1);
  const kart::SliceGradAttrs *a = k.attrs_as_SliceGradAttrs();
  int64_t axis = normAxis(a->axis(), like.size()), start = a->start();
  bool ok = g.size() == like.size() && start + g[axis] <= like[axis];
  for (size_t d = 0; ok && d < g.size(); ++d)
    ok = d == static_cast<size_t>(axis) || g[d] == like[d];
  if (!ok)
    return fail(k, "gradient " + str(g) + " does not fit " + str(like) +
                       " at " + std::to_string(start));
  out.push_back(like);
  return Status::ok();
}

RULE(shapeReduceGrad) {
  const Shape &g = shapeOf(in, 0), &x = shapeOf(in, 1);
  const kart::ReduceGradAttrs *a = k.attrs_as_ReduceGradAttrs();
  if (reducedShape(a->keepdim(), *a->axes(), x) != g)
    return fail(k, "gradient " + str(g) + " is not the reduction of " + str(x));
  out.push_back(x);
  return Status::ok();
}

RULE(shapeConcatGrad) {
  const Shape &g = shapeOf(in, 0);
  int64_t axis = normAxis(k.attrs_as_AxisAttrs()->axis(), g.size()), total = 0;
  for (size_t i = 1; i < in.size(); ++i) {
    const Shape &t = shapeOf(in, i);
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

RULE(shapeGlobalNorm) {
  out.push_back({});
  return Status::ok();
}

RULE(shapeOptimizerUpdate) {
  if (shapeOf(in, 0) != shapeOf(in, 1))
    return fail(k, "gradient " + str(shapeOf(in, 1)) +
                       " does not match the parameter " + str(shapeOf(in, 0)));
  return Status::ok();
}

RULE(shapeAttentionGrad) {
  const Shape &q = shapeOf(in, 1), &kk = shapeOf(in, 2), &v = shapeOf(in, 3);
  const kart::AttentionAttrs *a = k.attrs_as_AttentionAttrs();
  int64_t h = a->heads(), kvh = a->kv_heads();
  if (Status st = checkAttentionShapes(k, q, kk, v, in[6], in[7]); !st)
    return st;
  Shape o = {q[0], q[1], v[2] / kvh * h}, l = {q[0], h, q[1]};
  if (shapeOf(in, 0) != o || shapeOf(in, 4) != o || shapeOf(in, 5) != l)
    return fail(k, "gradient " + str(shapeOf(in, 0)) + ", output " +
                       str(shapeOf(in, 4)) + " or lse " + str(shapeOf(in, 5)) +
                       " do not match q " + str(q));
  out = {q, kk, v};
  if (in[7])
    out.push_back(*in[7]);
  return Status::ok();
}

RULE(shapeRelativePositionBucket) {
  const Shape &q = shapeOf(in, 0), &kk = shapeOf(in, 1);
  out.push_back({q[q.size() - 2], kk[kk.size() - 2]});
  return Status::ok();
}

RULE(shapeCrossEntropy) {
  const Shape &logits = shapeOf(in, 0);
  if (Shape(logits.begin(), logits.end() - 1) != shapeOf(in, 1))
    return fail(k, "targets " + str(shapeOf(in, 1)) + " do not match logits " +
                       str(logits));
  out.push_back(k.op() == Op::CrossEntropy ? Shape() : logits);
  return Status::ok();
}

RULE(shapeFused) { return inferFusedShapes(k, in, out); }

#undef RULE

Status kiln::runtime::inferShapes(const kart::Kernel &k,
                                  const std::vector<const Shape *> &in,
                                  const std::vector<int64_t> &symbols,
                                  std::vector<Shape> &out) {
  out.clear();
  return opInfo(k.op()).shapes(k, in, symbols, out);
}
