//===- Kernels.cpp - CPU kernels and their run-time shape rules -----------===//
//
// Kernels are written for clarity first: each is the naive reference that
// the fused, vectorized kernels of later work are checked against. Loops over
// independent rows use OpenMP, which oneDNN also uses, so the two share one
// thread pool.
//
//===----------------------------------------------------------------------===//
#include "runtime/Kernels.h"
#include "runtime/Random.h"
#include "runtime/Vector.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>

using namespace kiln;
using namespace kiln::runtime;
using kart::Op;

namespace {

using Shape = std::vector<int64_t>;

std::string str(const Shape &s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i)
    r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

Status fail(const kart::Kernel &k, const std::string &msg) {
  std::string where = k.location() ? k.location()->str() : std::string();
  return Status::error((where.empty() ? "" : where + ": ") +
                       kart::EnumNameOp(k.op()) + ": " + msg);
}

int64_t numelOf(const Shape &s) {
  return std::accumulate(s.begin(), s.end(), int64_t(1),
                         std::multiplies<int64_t>());
}

int64_t normAxis(int64_t axis, int64_t rank) {
  return axis < 0 ? axis + rank : axis;
}

int64_t ival(const kart::Kernel &k, size_t i) { return k.ints()->Get(i); }
double fval(const kart::Kernel &k, size_t i) { return k.floats()->Get(i); }

bool broadcast(const Shape &a, const Shape &b, Shape &out) {
  size_t r = std::max(a.size(), b.size());
  out.assign(r, 1);
  for (size_t i = 0; i < r; ++i) {
    int64_t da = i < a.size() ? a[a.size() - 1 - i] : 1;
    int64_t db = i < b.size() ? b[b.size() - 1 - i] : 1;
    if (da != db && da != 1 && db != 1)
      return false;
    out[r - 1 - i] = da == 1 ? db : da;
  }
  return true;
}

/// Row-major strides of `shape` aligned to an output of rank `rank`, with 0
/// for broadcast dimensions.
std::vector<int64_t> broadcastStrides(const Shape &shape, const Shape &out) {
  std::vector<int64_t> st(out.size(), 0);
  int64_t s = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    size_t oi = out.size() - 1 - i;
    size_t si = shape.size() - 1 - i;
    st[oi] = shape[si] == 1 ? 0 : s;
    s *= shape[si];
  }
  return st;
}

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

//===----------------------------------------------------------------------===//
// Kernels
//===----------------------------------------------------------------------===//

namespace {

/// The naive batched matmul that the oneDNN primitive is checked against.
Status matmulReference(KernelContext &c) {
  const Shape &a = *c.in[0].shape, &b = *c.in[1].shape, &o = *c.out[0].shape;
  bool ta = ival(c.kernel, 0), tb = ival(c.kernel, 1);
  size_t r = o.size();
  int64_t M = o[r - 2], N = o[r - 1];
  int64_t K = ta ? a[a.size() - 2] : a.back();
  Shape batch(o.begin(), o.end() - 2);
  std::vector<int64_t> sa = broadcastStrides(Shape(a.begin(), a.end() - 2),
                                             batch),
                       sb = broadcastStrides(Shape(b.begin(), b.end() - 2),
                                             batch);
  int64_t batches = c.out[0].numel() / std::max<int64_t>(M * N, 1);
  const float *pa = c.in[0].as<float>(), *pb = c.in[1].as<float>();
  float *po = c.out[0].as<float>();
#pragma omp parallel for
  for (int64_t bi = 0; bi < batches; ++bi) {
    int64_t rem = bi, oa = 0, ob = 0;
    for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {
      int64_t idx = rem % batch[d];
      rem /= batch[d];
      oa += idx * sa[d];
      ob += idx * sb[d];
    }
    const float *A = pa + oa * M * K, *Bm = pb + ob * K * N;
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k)
          acc += static_cast<double>(ta ? A[k * M + i] : A[i * K + k]) *
                 (tb ? Bm[j * K + k] : Bm[k * N + j]);
        po[(bi * M + i) * N + j] = static_cast<float>(acc);
      }
  }
  return Status::ok();
}

template <typename T, typename F>
void binaryLoop(const View &a, const View &b, const View &o, F f) {
  const Shape &os = *o.shape;
  std::vector<int64_t> sa = broadcastStrides(*a.shape, os),
                       sb = broadcastStrides(*b.shape, os);
  int64_t n = o.numel(), r = os.size();
  const T *pa = a.as<T>(), *pb = b.as<T>();
  T *po = o.as<T>();
  int64_t inner = r ? os[r - 1] : 1;
  int64_t rows = inner ? n / inner : 0;
#pragma omp parallel for if (n > 32768)
  for (int64_t row = 0; row < rows; ++row) {
    int64_t ia = 0, ib = 0, rem = row;
    for (int64_t d = r - 2; d >= 0; --d) {
      int64_t idx = rem % os[d];
      rem /= os[d];
      ia += idx * sa[d];
      ib += idx * sb[d];
    }
    int64_t ca = r ? sa[r - 1] : 0, cb = r ? sb[r - 1] : 0;
    T *out = po + row * inner;
    for (int64_t j = 0; j < inner; ++j)
      out[j] = f(pa[ia + j * ca], pb[ib + j * cb]);
  }
}

template <typename T> Status binaryTyped(KernelContext &c) {
  const View &a = c.in[0], &b = c.in[1], &o = c.out[0];
  switch (c.kernel.op()) {
  case Op::Add:
    binaryLoop<T>(a, b, o, [](T x, T y) { return x + y; });
    break;
  case Op::Sub:
    binaryLoop<T>(a, b, o, [](T x, T y) { return x - y; });
    break;
  case Op::Mul:
    binaryLoop<T>(a, b, o, [](T x, T y) { return x * y; });
    break;
  case Op::Div:
    binaryLoop<T>(a, b, o, [](T x, T y) { return x / y; });
    break;
  case Op::Max:
    binaryLoop<T>(a, b, o, [](T x, T y) { return std::max(x, y); });
    break;
  case Op::Min:
    binaryLoop<T>(a, b, o, [](T x, T y) { return std::min(x, y); });
    break;
  default:
    binaryLoop<T>(a, b, o, [](T x, T y) {
      return static_cast<T>(
          std::pow(static_cast<double>(x), static_cast<double>(y)));
    });
    break;
  }
  return Status::ok();
}

Status binary(KernelContext &c) {
  if (c.kernel.op() == Op::Div && c.in[0].dtype != DType::F32) {
    // Integer division by zero would be undefined behaviour.
    const View &b = c.in[1];
    for (int64_t i = 0; i < b.numel(); ++i)
      if ((b.dtype == DType::I32 ? b.as<int32_t>()[i] : b.as<int64_t>()[i]) ==
          0)
        return fail(c.kernel, "integer division by zero");
  }
  switch (c.in[0].dtype) {
  case DType::F32:
    return binaryTyped<float>(c);
  case DType::I32:
    return binaryTyped<int32_t>(c);
  case DType::I64:
    return binaryTyped<int64_t>(c);
  default:
    return fail(c.kernel, std::string("unsupported element type ") +
                              dtypeName(c.in[0].dtype));
  }
}

float gelu(float x, bool approx) {
  if (approx) {
    const float k = 0.7978845608028654f; // sqrt(2/pi)
    return 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
  }
  return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f));
}

Status unary(KernelContext &c) {
  const float *x = c.in[0].as<float>();
  float *y = c.out[0].as<float>();
  int64_t n = c.out[0].numel();
  Op op = c.kernel.op();
  bool approx = op == Op::Gelu && c.kernel.text()->str() == "tanh";
#pragma omp parallel for if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i];
    switch (op) {
    case Op::Neg:
      v = -v;
      break;
    case Op::Exp:
      v = std::exp(v);
      break;
    case Op::Log:
      v = std::log(v);
      break;
    case Op::Sqrt:
      v = std::sqrt(v);
      break;
    case Op::Rsqrt:
      v = 1.0f / std::sqrt(v);
      break;
    case Op::Tanh:
      v = std::tanh(v);
      break;
    case Op::Sigmoid:
      v = 1.0f / (1.0f + std::exp(-v));
      break;
    case Op::Relu:
      v = v > 0 ? v : 0.0f;
      break;
    case Op::Silu:
      v = v / (1.0f + std::exp(-v));
      break;
    case Op::Gelu:
      v = gelu(v, approx);
      break;
    default:
      break;
    }
    y[i] = v;
  }
  return Status::ok();
}

template <typename T> T readAs(const View &v, int64_t i) {
  switch (v.dtype) {
  case DType::F32:
    return static_cast<T>(v.as<float>()[i]);
  case DType::F64:
    return static_cast<T>(v.as<double>()[i]);
  case DType::I32:
    return static_cast<T>(v.as<int32_t>()[i]);
  case DType::I64:
    return static_cast<T>(v.as<int64_t>()[i]);
  case DType::Bool:
    return static_cast<T>(v.as<uint8_t>()[i] != 0);
  default:
    return T();
  }
}

Status cast(KernelContext &c) {
  const View &x = c.in[0], &y = c.out[0];
  int64_t n = y.numel();
  for (int64_t i = 0; i < n; ++i) {
    switch (y.dtype) {
    case DType::F32:
      y.as<float>()[i] = readAs<float>(x, i);
      break;
    case DType::F64:
      y.as<double>()[i] = readAs<double>(x, i);
      break;
    case DType::I32:
      y.as<int32_t>()[i] = readAs<int32_t>(x, i);
      break;
    case DType::I64:
      y.as<int64_t>()[i] = readAs<int64_t>(x, i);
      break;
    case DType::Bool:
      y.as<uint8_t>()[i] = readAs<double>(x, i) != 0;
      break;
    default:
      return fail(c.kernel, "unsupported element type");
    }
  }
  return Status::ok();
}

int64_t index(const View &ids, int64_t i) {
  return ids.dtype == DType::I32 ? ids.as<int32_t>()[i] : ids.as<int64_t>()[i];
}

Status embedding(KernelContext &c) {
  const View &table = c.in[0], &ids = c.in[1];
  int64_t v = (*table.shape)[0], d = (*table.shape)[1], n = ids.numel();
  for (int64_t i = 0; i < n; ++i) {
    int64_t id = index(ids, i);
    if (id < 0 || id >= v)
      return fail(c.kernel, "index " + std::to_string(id) + " at position " +
                                std::to_string(i) + " is outside [0, " +
                                std::to_string(v) + ")");
    std::memcpy(c.out[0].as<float>() + i * d, table.as<float>() + id * d,
                d * sizeof(float));
  }
  return Status::ok();
}

Status transpose(KernelContext &c) {
  const Shape &xs = *c.in[0].shape, &ys = *c.out[0].shape;
  size_t r = xs.size(), esz = dtypeSize(c.in[0].dtype);
  std::vector<int64_t> xst(r, 1);
  for (int i = static_cast<int>(r) - 2; i >= 0; --i)
    xst[i] = xst[i + 1] * xs[i + 1];
  std::vector<int64_t> src(r);
  for (size_t d = 0; d < r; ++d)
    src[d] = xst[ival(c.kernel, d)];
  int64_t n = c.out[0].numel();
  const char *x = static_cast<const char *>(c.in[0].data);
  char *y = static_cast<char *>(c.out[0].data);
#pragma omp parallel for if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    int64_t rem = i, off = 0;
    for (int64_t d = r - 1; d >= 0; --d) {
      off += (rem % ys[d]) * src[d];
      rem /= ys[d];
    }
    std::memcpy(y + i * esz, x + off * esz, esz);
  }
  return Status::ok();
}

/// Copies blocks between an outer/axis/inner decomposition (slice, concat,
/// split).
void copyAxis(const View &from, int64_t fromStart, const View &to,
              int64_t toStart, int64_t count, int64_t axis) {
  const Shape &fs = *from.shape, &ts = *to.shape;
  size_t esz = dtypeSize(from.dtype);
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d)
    outer *= fs[d];
  for (size_t d = axis + 1; d < fs.size(); ++d)
    inner *= fs[d];
  const char *src = static_cast<const char *>(from.data);
  char *dst = static_cast<char *>(to.data);
  for (int64_t o = 0; o < outer; ++o)
    std::memcpy(dst + ((o * ts[axis] + toStart) * inner) * esz,
                src + ((o * fs[axis] + fromStart) * inner) * esz,
                count * inner * esz);
}

/// Reduction over one contiguous block of axes, as [outer, R, inner] ->
/// [outer, inner]: rows are summed in a fixed order (deterministic), with
/// the inner dimension contiguous and vectorizable.
void reduceBlock(Op op, const float *x, float *y, int64_t outer, int64_t R,
                 int64_t inner) {
  bool isMax = op == Op::ReduceMax;
  float init = isMax ? -INFINITY : 0.0f;
  if (inner == 1) {
#pragma omp parallel for if (outer * R > 32768)
    for (int64_t o = 0; o < outer; ++o) {
      const float *xr = x + o * R;
      float acc = init;
      if (isMax)
        for (int64_t r = 0; r < R; ++r)
          acc = std::max(acc, xr[r]);
      else
        for (int64_t r = 0; r < R; ++r)
          acc += xr[r];
      y[o] = acc;
    }
  } else {
    const int64_t chunk = 256;
    int64_t chunks = (inner + chunk - 1) / chunk;
#pragma omp parallel for collapse(2) if (outer * R * inner > 32768)
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t ci = 0; ci < chunks; ++ci) {
        int64_t i0 = ci * chunk, i1 = std::min(inner, i0 + chunk);
        float *yr = y + o * inner;
        for (int64_t i = i0; i < i1; ++i)
          yr[i] = init;
        for (int64_t r = 0; r < R; ++r) {
          const float *xr = x + (o * R + r) * inner;
          if (isMax)
            for (int64_t i = i0; i < i1; ++i)
              yr[i] = std::max(yr[i], xr[i]);
          else
            for (int64_t i = i0; i < i1; ++i)
              yr[i] += xr[i];
        }
      }
  }
  if (op == Op::ReduceMean)
    for (int64_t i = 0; i < outer * inner; ++i)
      y[i] /= static_cast<float>(R);
}

Status reduce(KernelContext &c) {
  const Shape &xs = *c.in[0].shape;
  std::vector<bool> red(xs.size(), false);
  for (size_t i = 1; i < c.kernel.ints()->size(); ++i)
    red[normAxis(ival(c.kernel, i), xs.size())] = true;
  Op op = c.kernel.op();
  // One contiguous block of reduced axes (the common case: a bias gradient
  // over [B, T], a norm over the last axis) takes the blocked kernel.
  int64_t first, last;
  if (reducedBlock(c.kernel, xs.size(), first, last)) {
    int64_t outer = 1, R = 1, inner = 1;
    for (int64_t d = 0; d < static_cast<int64_t>(xs.size()); ++d)
      (d < first ? outer : d <= last ? R : inner) *= xs[d];
    reduceBlock(op, c.in[0].as<float>(), c.out[0].as<float>(), outer, R, inner);
    return Status::ok();
  }
  int64_t on = c.out[0].numel();
  float *y = c.out[0].as<float>();
  const float *x = c.in[0].as<float>();
  int64_t count = 1;
  for (size_t d = 0; d < xs.size(); ++d)
    if (red[d])
      count *= xs[d];
  for (int64_t i = 0; i < on; ++i)
    y[i] = op == Op::ReduceMax ? -INFINITY : 0.0f;
  // Output strides over the input's dimensions (0 on reduced ones).
  std::vector<int64_t> ost(xs.size(), 0);
  int64_t s = 1;
  for (int64_t d = xs.size() - 1; d >= 0; --d)
    if (!red[d]) {
      ost[d] = s;
      s *= xs[d];
    }
  int64_t n = c.in[0].numel();
  for (int64_t i = 0; i < n; ++i) {
    int64_t rem = i, o = 0;
    for (int64_t d = xs.size() - 1; d >= 0; --d) {
      o += (rem % xs[d]) * ost[d];
      rem /= xs[d];
    }
    y[o] = op == Op::ReduceMax ? std::max(y[o], x[i]) : y[o] + x[i];
  }
  if (op == Op::ReduceMean)
    for (int64_t i = 0; i < on; ++i)
      y[i] /= static_cast<float>(count);
  return Status::ok();
}

Status norm(KernelContext &c) {
  bool layer = c.kernel.op() == Op::LayerNorm;
  const Shape &xs = *c.in[0].shape;
  int64_t C = xs.back(), rows = c.in[0].numel() / std::max<int64_t>(C, 1);
  float eps = static_cast<float>(fval(c.kernel, 0));
  const float *x = c.in[0].as<float>(), *w = c.in[1].as<float>();
  const float *b = layer ? c.in[2].as<float>() : nullptr;
  float *y = c.out[0].as<float>();
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x + r * C;
    float *yr = y + r * C;
    float mean;
    float inv = normStats(xr, C, layer, eps, mean);
    for (int64_t i = 0; i < C; ++i)
      yr[i] = (xr[i] - mean) * inv * w[i] + (layer ? b[i] : 0.0f);
  }
  return Status::ok();
}

Status softmax(KernelContext &c) {
  const Shape &xs = *c.in[0].shape;
  int64_t axis = normAxis(ival(c.kernel, 0), xs.size());
  int64_t outer = 1, inner = 1, n = xs[axis];
  for (int64_t d = 0; d < axis; ++d)
    outer *= xs[d];
  for (size_t d = axis + 1; d < xs.size(); ++d)
    inner *= xs[d];
  const float *x = c.in[0].as<float>();
  float *y = c.out[0].as<float>();
#pragma omp parallel for collapse(2)
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const float *xr = x + o * n * inner + i;
      float *yr = y + o * n * inner + i;
      float m = -INFINITY;
      for (int64_t j = 0; j < n; ++j)
        m = std::max(m, xr[j * inner]);
      float sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        yr[j * inner] = std::exp(xr[j * inner] - m);
        sum += yr[j * inner];
      }
      for (int64_t j = 0; j < n; ++j)
        yr[j * inner] /= sum;
    }
  return Status::ok();
}

Status rope(KernelContext &c) {
  const Shape &xs = *c.in[0].shape; // [B, T, C]
  int64_t B = xs[0], T = xs[1], C = xs[2], hd = ival(c.kernel, 0);
  double theta = fval(c.kernel, 0);
  bool half = c.kernel.text()->str() == "half";
  bool inverse = c.kernel.ints()->size() > 1 && ival(c.kernel, 1);
  const View &pos = c.in[1];
  const float *x = c.in[0].as<float>();
  float *y = c.out[0].as<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      int64_t p = t;
      if (pos.data)
        p = pos.shape->size() == 1 ? index(pos, t) : index(pos, b * T + t);
      const float *xr = x + (b * T + t) * C;
      float *yr = y + (b * T + t) * C;
      for (int64_t h = 0; h < C / hd; ++h)
        for (int64_t i = 0; i < hd / 2; ++i) {
          double freq = std::pow(theta, -2.0 * i / hd);
          double ang = p * freq;
          float cs = static_cast<float>(std::cos(ang)),
                sn = static_cast<float>(inverse ? -std::sin(ang)
                                                : std::sin(ang));
          int64_t i0 = h * hd + (half ? i : 2 * i);
          int64_t i1 = h * hd + (half ? i + hd / 2 : 2 * i + 1);
          float a = xr[i0], bb = xr[i1];
          yr[i0] = a * cs - bb * sn;
          yr[i1] = a * sn + bb * cs;
        }
    }
  return Status::ok();
}

Status attention(KernelContext &c) {
  const Shape &qs = *c.in[0].shape, &ks = *c.in[1].shape, &vs = *c.in[2].shape;
  int64_t B = qs[0], Tq = qs[1], Tk = ks[1];
  int64_t H = ival(c.kernel, 0), Hkv = ival(c.kernel, 1);
  bool causal = ival(c.kernel, 2);
  int64_t D = qs[2] / H, Dv = vs[2] / Hkv, group = H / Hkv;
  float scale = static_cast<float>(fval(c.kernel, 0));
  const View &mask = c.in[3], &bias = c.in[4];
  Shape full = {B, H, Tq, Tk};
  std::vector<int64_t> bst;
  if (bias.data)
    bst = broadcastStrides(*bias.shape, full);
  const float *q = c.in[0].as<float>(), *k = c.in[1].as<float>(),
              *v = c.in[2].as<float>();
  float *o = c.out[0].as<float>();
  float *lse = c.out.size() > 1 ? c.out[1].as<float>() : nullptr;
  int64_t offset = Tk - Tq; // causal alignment at the end
#pragma omp parallel
  {
    std::vector<float> s(Tk);
#pragma omp for collapse(3)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < Tq; ++i) {
          int64_t hk = h / group;
          const float *qi = q + (b * Tq + i) * H * D + h * D;
          float m = -INFINITY;
          for (int64_t j = 0; j < Tk; ++j) {
            bool visible = !causal || j <= i + offset;
            if (visible && mask.data)
              visible = readAs<double>(mask, b * Tk + j) != 0;
            if (!visible) {
              s[j] = -INFINITY;
              continue;
            }
            const float *kj = k + (b * Tk + j) * Hkv * D + hk * D;
            float dot = 0;
            for (int64_t d = 0; d < D; ++d)
              dot += qi[d] * kj[d];
            dot *= scale;
            if (bias.data)
              dot += bias.as<float>()[b * bst[0] + h * bst[1] + i * bst[2] +
                                      j * bst[3]];
            s[j] = dot;
            m = std::max(m, dot);
          }
          float *oi = o + (b * Tq + i) * H * Dv + h * Dv;
          std::fill(oi, oi + Dv, 0.0f);
          if (m == -INFINITY) { // every key masked: the output row is zero
            if (lse)
              lse[(b * H + h) * Tq + i] = -INFINITY;
            continue;
          }
          float sum = 0;
          for (int64_t j = 0; j < Tk; ++j) {
            s[j] = s[j] == -INFINITY ? 0.0f : std::exp(s[j] - m);
            sum += s[j];
          }
          if (lse)
            lse[(b * H + h) * Tq + i] = m + std::log(sum);
          for (int64_t j = 0; j < Tk; ++j) {
            if (s[j] == 0.0f)
              continue;
            float p = s[j] / sum;
            const float *vj = v + (b * Tk + j) * Hkv * Dv + hk * Dv;
            for (int64_t d = 0; d < Dv; ++d)
              oi[d] += p * vj[d];
          }
        }
  }
  return Status::ok();
}

Status relativePositionBucket(KernelContext &c) {
  const Shape &os = *c.out[0].shape;
  int64_t Tq = os[0], Tk = os[1];
  bool bidir = ival(c.kernel, 0);
  int64_t nb = ival(c.kernel, 1), maxDist = ival(c.kernel, 2);
  int32_t *y = c.out[0].as<int32_t>();
  for (int64_t i = 0; i < Tq; ++i)
    for (int64_t j = 0; j < Tk; ++j) {
      int64_t rel = j - i, bucket = 0, n = nb;
      if (bidir) {
        n /= 2;
        if (rel > 0)
          bucket += n;
        rel = std::abs(rel);
      } else {
        rel = -std::min<int64_t>(rel, 0);
      }
      int64_t exact = n / 2;
      if (rel < exact) {
        bucket += rel;
      } else {
        // In float32, as T5's reference computes it, so buckets agree at
        // the boundaries.
        float ratio =
            std::log(static_cast<float>(rel) / static_cast<float>(exact)) /
            static_cast<float>(std::log(static_cast<double>(maxDist) / exact));
        int64_t large =
            exact + static_cast<int64_t>(ratio * static_cast<float>(n - exact));
        bucket += std::min(large, n - 1);
      }
      y[i * Tk + j] = static_cast<int32_t>(bucket);
    }
  return Status::ok();
}

Status crossEntropy(KernelContext &c) {
  const Shape &ls = *c.in[0].shape;
  int64_t V = ls.back(), rows = c.in[0].numel() / std::max<int64_t>(V, 1);
  int64_t ignore = ival(c.kernel, 0), counted;
  if (Status s = countTargets(c, rows, V, ignore, counted); !s)
    return s;
  const float *l = c.in[0].as<float>();
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t t = index(c.in[1], r);
    if (t == ignore)
      continue;
    const float *lr = l + r * V;
    float m = *std::max_element(lr, lr + V);
    double sum = 0;
    for (int64_t j = 0; j < V; ++j)
      sum += std::exp(static_cast<double>(lr[j] - m));
    total += std::log(sum) + m - lr[t];
  }
  // Every target ignored: the mean over nothing is NaN, as in PyTorch.
  c.out[0].as<float>()[0] = counted ? static_cast<float>(total / counted) : NAN;
  return Status::ok();
}

/// dL/dlogits = (softmax(logits) - onehot(target)) * upstream / counted,
/// row by row with the kernel softmax_cross_entropy uses.
Status crossEntropyGrad(KernelContext &c) {
  const Shape &ls = *c.in[0].shape;
  int64_t V = ls.back(), rows = c.in[0].numel() / std::max<int64_t>(V, 1);
  int64_t ignore = ival(c.kernel, 0), counted;
  if (Status s = countTargets(c, rows, V, ignore, counted); !s)
    return s;
  float scale = c.in[2].as<float>()[0] /
                static_cast<float>(std::max<int64_t>(counted, 1));
  const float *l = c.in[0].as<float>();
  float *d = c.out[0].as<float>();
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r) {
    int64_t t = index(c.in[1], r);
    if (t == ignore)
      std::fill(d + r * V, d + (r + 1) * V, 0.0f);
    else
      crossEntropyRow(l + r * V, d + r * V, V, t, scale);
  }
  return Status::ok();
}

//===----------------------------------------------------------------------===//
// Training: dropout masks and gradient kernels
//===----------------------------------------------------------------------===//

/// Dropout in training: element `i` survives unless a counter-based random
/// draw from (run seed, op seed, i) falls below the rate, so the backward
/// pass regenerates exactly the forward mask.
Status dropoutTraining(KernelContext &c) {
  double rate = fval(c.kernel, 0);
  int64_t n = c.in[0].numel();
  const float *x = c.in[0].as<float>();
  float *y = c.out[0].as<float>();
  uint64_t base =
      SplitMix64{c.seed ^ (static_cast<uint64_t>(ival(c.kernel, 0)) *
                           0xd1b54a32d192ed03ull)}
          .next();
  float keep = static_cast<float>(1.0 / (1.0 - rate));
#pragma omp parallel for if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    SplitMix64 r{base + static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ull};
    y[i] = r.uniform() < rate ? 0.0f : x[i] * keep;
  }
  return Status::ok();
}

Status embeddingGrad(KernelContext &c) {
  const View &g = c.in[0], &ids = c.in[1];
  int64_t v = (*c.out[0].shape)[0], d = (*c.out[0].shape)[1], n = ids.numel();
  float *out = c.out[0].as<float>();
  std::fill(out, out + v * d, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    int64_t id = index(ids, i);
    if (id < 0 || id >= v)
      return fail(c.kernel, "index " + std::to_string(id) + " at position " +
                                std::to_string(i) + " is outside [0, " +
                                std::to_string(v) + ")");
    const float *gr = g.as<float>() + i * d;
    float *row = out + id * d;
    for (int64_t j = 0; j < d; ++j)
      row[j] += gr[j];
  }
  return Status::ok();
}

Status activationGrad(KernelContext &c) {
  const std::string kind = c.kernel.text()->str();
  const float *g = c.in[0].as<float>(), *x = c.in[1].as<float>();
  float *y = c.out[0].as<float>();
  int64_t n = c.out[0].numel();
  int k = kind == "relu" ? 0 : kind == "gelu" ? 1 : kind == "gelu_tanh" ? 2 : 3;
#pragma omp parallel for if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    double v = x[i], d;
    switch (k) {
    case 0:
      d = v > 0 ? 1.0 : 0.0;
      break;
    case 1:
      d = 0.5 * (1.0 + std::erf(v * 0.7071067811865476)) +
          v * std::exp(-0.5 * v * v) * 0.3989422804014327;
      break;
    case 2: {
      const double kk = 0.7978845608028654, cc = 0.044715;
      double t = std::tanh(kk * (v + cc * v * v * v));
      d = 0.5 * (1.0 + t) +
          0.5 * v * (1.0 - t * t) * kk * (1.0 + 3.0 * cc * v * v);
      break;
    }
    default: {
      double sg = 1.0 / (1.0 + std::exp(-v));
      d = sg * (1.0 + v * (1.0 - sg));
      break;
    }
    }
    y[i] = static_cast<float>(g[i] * d);
  }
  return Status::ok();
}

Status reduceGrad(KernelContext &c) {
  const Shape &xs = *c.in[1].shape;
  std::vector<bool> red(xs.size(), false);
  for (size_t i = 1; i < c.kernel.ints()->size(); ++i)
    red[normAxis(ival(c.kernel, i), xs.size())] = true;
  const std::string kind = c.kernel.text()->str();
  const float *g = c.in[0].as<float>(), *x = c.in[1].as<float>();
  float *y = c.out[0].as<float>();
  int64_t count = 1;
  std::vector<int64_t> ost(xs.size(), 0);
  int64_t s = 1;
  for (int64_t d = xs.size() - 1; d >= 0; --d) {
    if (red[d]) {
      count *= xs[d];
    } else {
      ost[d] = s;
      s *= xs[d];
    }
  }
  int64_t n = c.in[1].numel(), on = s;
  auto outIndex = [&](int64_t i) {
    int64_t rem = i, o = 0;
    for (int64_t d = xs.size() - 1; d >= 0; --d) {
      o += (rem % xs[d]) * ost[d];
      rem /= xs[d];
    }
    return o;
  };
  if (kind == "max") {
    std::vector<float> mx(on, -INFINITY);
    std::vector<int64_t> ties(on, 0);
    for (int64_t i = 0; i < n; ++i)
      mx[outIndex(i)] = std::max(mx[outIndex(i)], x[i]);
    for (int64_t i = 0; i < n; ++i)
      ties[outIndex(i)] += x[i] == mx[outIndex(i)];
    for (int64_t i = 0; i < n; ++i) {
      int64_t o = outIndex(i);
      y[i] = x[i] == mx[o] ? g[o] / static_cast<float>(ties[o]) : 0.0f;
    }
    return Status::ok();
  }
  float scale = kind == "mean" ? 1.0f / static_cast<float>(count) : 1.0f;
#pragma omp parallel for if (n > 32768)
  for (int64_t i = 0; i < n; ++i)
    y[i] = g[outIndex(i)] * scale;
  return Status::ok();
}

/// The fused attention backward. Per query row it recomputes the scores and,
/// from the saved log-sum-exp, the probabilities p; with D = dO . O,
/// dS = p (dO . v - D), dQ = scale dS K, dK = scale dS^T Q, dV = p^T dO.
/// Threads own (batch, key/value head) pairs, so dK and dV need no locks.
Status attentionGrad(KernelContext &c) {
  const View &gO = c.in[0], &qv = c.in[1], &kv = c.in[2], &vv = c.in[3],
             &ov = c.in[4], &lv = c.in[5], &mask = c.in[6], &bias = c.in[7];
  const Shape &qs = *qv.shape, &ks = *kv.shape, &vs = *vv.shape;
  int64_t B = qs[0], Tq = qs[1], Tk = ks[1];
  int64_t H = ival(c.kernel, 0), Hkv = ival(c.kernel, 1);
  bool causal = ival(c.kernel, 2);
  int64_t D = qs[2] / H, Dv = vs[2] / Hkv, group = H / Hkv;
  float scale = static_cast<float>(fval(c.kernel, 0));
  Shape full = {B, H, Tq, Tk};
  std::vector<int64_t> bst;
  if (bias.data)
    bst = broadcastStrides(*bias.shape, full);
  const float *g = gO.as<float>(), *q = qv.as<float>(), *k = kv.as<float>(),
              *v = vv.as<float>(), *o = ov.as<float>(), *lse = lv.as<float>();
  float *dq = c.out[0].as<float>(), *dk = c.out[1].as<float>(),
        *dv = c.out[2].as<float>();
  std::fill(dq, dq + c.out[0].numel(), 0.0f);
  std::fill(dk, dk + c.out[1].numel(), 0.0f);
  std::fill(dv, dv + c.out[2].numel(), 0.0f);
  // With a bias, dS is its gradient before the broadcast sum: kept whole.
  std::vector<float> dsAll(bias.data ? B * H * Tq * Tk : 0, 0.0f);
  int64_t offset = Tk - Tq;
#pragma omp parallel for collapse(2)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t hk = 0; hk < Hkv; ++hk)
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h)
        for (int64_t i = 0; i < Tq; ++i) {
          float l = lse[(b * H + h) * Tq + i];
          if (l == -INFINITY)
            continue;
          const float *qi = q + (b * Tq + i) * H * D + h * D;
          const float *gi = g + (b * Tq + i) * H * Dv + h * Dv;
          const float *oi = o + (b * Tq + i) * H * Dv + h * Dv;
          float *dqi = dq + (b * Tq + i) * H * D + h * D;
          float di = 0;
          for (int64_t d = 0; d < Dv; ++d)
            di += gi[d] * oi[d];
          for (int64_t j = 0; j < Tk; ++j) {
            bool visible = !causal || j <= i + offset;
            if (visible && mask.data)
              visible = readAs<double>(mask, b * Tk + j) != 0;
            if (!visible)
              continue;
            const float *kj = k + (b * Tk + j) * Hkv * D + hk * D;
            const float *vj = v + (b * Tk + j) * Hkv * Dv + hk * Dv;
            float sc = 0;
            for (int64_t d = 0; d < D; ++d)
              sc += qi[d] * kj[d];
            sc *= scale;
            if (bias.data)
              sc += bias.as<float>()[b * bst[0] + h * bst[1] + i * bst[2] +
                                     j * bst[3]];
            float p = std::exp(sc - l);
            float dp = 0;
            for (int64_t d = 0; d < Dv; ++d)
              dp += gi[d] * vj[d];
            float ds = p * (dp - di);
            if (bias.data)
              dsAll[((b * H + h) * Tq + i) * Tk + j] = ds;
            float *dkj = dk + (b * Tk + j) * Hkv * D + hk * D;
            float *dvj = dv + (b * Tk + j) * Hkv * Dv + hk * Dv;
            for (int64_t d = 0; d < D; ++d) {
              dqi[d] += scale * ds * kj[d];
              dkj[d] += scale * ds * qi[d];
            }
            for (int64_t d = 0; d < Dv; ++d)
              dvj[d] += p * gi[d];
          }
        }
  if (bias.data) {
    float *db = c.out[3].as<float>();
    std::fill(db, db + c.out[3].numel(), 0.0f);
    int64_t n = B * H * Tq * Tk;
    for (int64_t e = 0; e < n; ++e) {
      int64_t j = e % Tk, i = (e / Tk) % Tq, h = (e / (Tk * Tq)) % H,
              b = e / (Tk * Tq * H);
      db[b * bst[0] + h * bst[1] + i * bst[2] + j * bst[3]] += dsAll[e];
    }
  }
  return Status::ok();
}

Status globalNorm(KernelContext &c) {
  std::vector<std::pair<const float *, int64_t>> ts;
  for (const View &v : c.in)
    ts.push_back({v.as<float>(), v.numel()});
  c.out[0].as<float>()[0] = static_cast<float>(std::sqrt(sumOfSquares(ts)));
  return Status::ok();
}

Status optimizerUpdate(KernelContext &c) {
  if (!c.optimizer || c.paramIndex < 0)
    return fail(c.kernel, "has no optimizer state to update");
  UpdateRule r;
  r.adamw = c.kernel.text()->str() == "adamw";
  r.lr = c.in[3].as<float>()[0];
  float step = c.in[4].as<float>()[0];
  if (!(step >= 1) || !(r.lr >= 0))
    return fail(c.kernel, "needs lr >= 0 and step >= 1, got lr " +
                              std::to_string(r.lr) + " and step " +
                              std::to_string(step));
  r.step = static_cast<int64_t>(std::lround(step));
  r.beta1 = static_cast<float>(fval(c.kernel, 0));
  r.beta2 = static_cast<float>(fval(c.kernel, 1));
  r.eps = static_cast<float>(fval(c.kernel, 2));
  r.weightDecay = static_cast<float>(fval(c.kernel, 3));
  r.momentum = static_cast<float>(fval(c.kernel, 4));
  r.clip = clipScale(c.in[2].as<float>()[0], fval(c.kernel, 5));
  int64_t n = c.in[0].numel();
  OptimizerState &st = *c.optimizer;
  size_t i = static_cast<size_t>(c.paramIndex);
  if (st.m.size() <= i)
    st.m.resize(i + 1);
  if (st.v.size() <= i)
    st.v.resize(i + 1);
  if (st.m[i].size() != static_cast<size_t>(n))
    st.m[i].assign(n, 0.0f);
  if (r.adamw && st.v[i].size() != static_cast<size_t>(n))
    st.v[i].assign(n, 0.0f);
  applyUpdate(r, c.in[0].as<float>(), st.m[i].data(),
              r.adamw ? st.v[i].data() : nullptr, c.in[1].as<float>(), n);
  return Status::ok();
}

} // namespace

bool kiln::runtime::reducedBlock(const kart::Kernel &k, size_t rank,
                                 int64_t &first, int64_t &last) {
  std::vector<bool> red(rank, false);
  for (size_t i = 1; i < k.ints()->size(); ++i)
    red[normAxis(ival(k, i), rank)] = true;
  first = last = -1;
  for (size_t d = 0; d < rank; ++d)
    if (red[d]) {
      if (first < 0)
        first = static_cast<int64_t>(d);
      last = static_cast<int64_t>(d);
    }
  if (first < 0)
    return false;
  for (int64_t d = first; d <= last; ++d)
    if (!red[d])
      return false;
  return true;
}

Status kiln::runtime::countTargets(const KernelContext &c, int64_t rows,
                                   int64_t V, int64_t ignore,
                                   int64_t &counted) {
  counted = 0;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t t = index(c.in[1], r);
    if (t == ignore)
      continue;
    if (t < 0 || t >= V)
      return fail(c.kernel, "target " + std::to_string(t) + " at position " +
                                std::to_string(r) + " is outside [0, " +
                                std::to_string(V) + ")");
    ++counted;
  }
  return Status::ok();
}

Status kiln::runtime::execute(KernelContext &c) {
  const kart::Kernel &k = c.kernel;
  Status fast;
  if (executeOneDNN(c, fast))
    return fast;
  if (isBinary(k.op()))
    return binary(c);
  if (isUnary(k.op()))
    return unary(c);
  switch (k.op()) {
  case Op::Embedding:
    return embedding(c);
  case Op::Matmul:
    return matmulReference(c);
  case Op::Cast:
    return cast(c);
  case Op::Dropout:
    if (c.training && fval(k, 0) > 0)
      return dropoutTraining(c);
    [[fallthrough]]; // inference: the identity
  case Op::Reshape:
  case Op::ReshapeLike:
    if (c.out[0].data != c.in[0].data)
      std::memcpy(c.out[0].data, c.in[0].data,
                  c.in[0].numel() * dtypeSize(c.in[0].dtype));
    return Status::ok();
  case Op::Transpose:
    return transpose(c);
  case Op::Slice: {
    int64_t axis = normAxis(ival(k, 0), c.in[0].shape->size());
    copyAxis(c.in[0], ival(k, 1), c.out[0], 0, (*c.out[0].shape)[axis], axis);
    return Status::ok();
  }
  case Op::Concat: {
    int64_t axis = normAxis(ival(k, 0), c.out[0].shape->size()), at = 0;
    for (const View &in : c.in) {
      copyAxis(in, 0, c.out[0], at, (*in.shape)[axis], axis);
      at += (*in.shape)[axis];
    }
    return Status::ok();
  }
  case Op::Split: {
    int64_t axis = normAxis(ival(k, 0), c.in[0].shape->size()), at = 0;
    for (const View &out : c.out) {
      copyAxis(c.in[0], at, out, 0, (*out.shape)[axis], axis);
      at += (*out.shape)[axis];
    }
    return Status::ok();
  }
  case Op::ReduceSum:
  case Op::ReduceMean:
  case Op::ReduceMax:
    return reduce(c);
  case Op::LayerNorm:
  case Op::RMSNorm:
    return norm(c);
  case Op::Softmax:
    return softmax(c);
  case Op::Rope:
    return rope(c);
  case Op::Attention:
    return useReferenceKernels() ? attention(c) : flashAttention(c);
  case Op::RelativePositionBucket:
    return relativePositionBucket(c);
  case Op::CrossEntropy:
    return crossEntropy(c);
  case Op::CrossEntropyGrad:
    return crossEntropyGrad(c);
  case Op::EmbeddingGrad:
    return embeddingGrad(c);
  case Op::GlobalNorm:
    return globalNorm(c);
  case Op::OptimizerUpdate:
    return optimizerUpdate(c);
  case Op::ActivationGrad:
    return activationGrad(c);
  case Op::ReduceGrad:
    return reduceGrad(c);
  case Op::AttentionGrad:
    return useReferenceKernels() || c.in[7].data ? attentionGrad(c)
                                                 : flashAttentionGrad(c);
  case Op::ZerosLike:
    std::memset(c.out[0].data, 0, c.out[0].numel() * dtypeSize(c.out[0].dtype));
    return Status::ok();
  case Op::SliceGrad: {
    int64_t axis = normAxis(ival(k, 0), c.out[0].shape->size());
    std::memset(c.out[0].data, 0, c.out[0].numel() * dtypeSize(c.out[0].dtype));
    copyAxis(c.in[0], 0, c.out[0], ival(k, 1), (*c.in[0].shape)[axis], axis);
    return Status::ok();
  }
  case Op::ConcatGrad: {
    int64_t axis = normAxis(ival(k, 0), c.in[0].shape->size()), at = 0;
    for (const View &out : c.out) {
      copyAxis(c.in[0], at, out, 0, (*out.shape)[axis], axis);
      at += (*out.shape)[axis];
    }
    return Status::ok();
  }
  case Op::FusedMatmul:
    return fusedMatmulReference(c);
  case Op::AddNorm:
  case Op::NormGrad:
  case Op::SoftmaxCrossEntropy:
  case Op::FusedElementwise:
    return executeFused(c);
  default:
    break;
  }
  return fail(k, "unknown op");
}
