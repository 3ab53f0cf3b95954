//===- Launch.cpp - the launches of kiln's CUDA kernels -------------------===//
#include "runtime/cuda/Launch.h"

#include "runtime/Random.h"
#include "runtime/attention/RelativeBucket.h"
#include "runtime/core/OpTable.h"
#include "runtime/cuda/KernelAbi.h"

#include <algorithm>
#include <cctype>
#include <cmath>

using namespace kiln;
using namespace kiln::runtime;
using namespace kiln::runtime::cuda;
using kart::Op;
using Shape = std::vector<int64_t>;

unsigned Launcher::blockSize() const { return KILN_CUDA_BLOCK; }
unsigned Launcher::maxGrid() const { return 65535; }
Status Launcher::moments(int64_t, int64_t, bool, float *&, float *&) {
  return Status::error("this launcher keeps no optimizer moments");
}
Status Launcher::gemm(const GemmCall &) {
  return Status::error("this launcher has no BLAS library");
}

namespace {

Status fail(const kart::Kernel &k, const std::string &msg) {
  std::string where = k.location() ? k.location()->str() + ": " : "";
  return Status::error(where + kart::EnumNameOp(k.op()) +
                       " on the CUDA device: " + msg);
}

int64_t axisOf(int64_t axis, size_t rank) {
  return axis < 0 ? axis + static_cast<int64_t>(rank) : axis;
}

/// Row-major element strides of a shape.
Shape stridesOf(const Shape &s) {
  Shape st(s.size(), 1);
  for (int64_t d = static_cast<int64_t>(s.size()) - 2; d >= 0; --d)
    st[d] = st[d + 1] * s[d + 1];
  return st;
}

int64_t numel(const Shape &s) {
  int64_t n = 1;
  for (int64_t d : s)
    n *= d;
  return n;
}

/// What one kernel of the artifact launches.
struct Call {
  const KernelContext &ctx;
  Launcher &l;
  const kart::Kernel &k() const { return ctx.kernel; }

  /// Enough blocks for `work` threads' worth of work, within the limit.
  unsigned grid(int64_t work) const {
    int64_t b = (work + l.blockSize() - 1) / l.blockSize();
    return static_cast<unsigned>(
        std::clamp<int64_t>(b, 1, static_cast<int64_t>(l.maxGrid())));
  }
  unsigned rowsGrid(int64_t rows) const {
    return static_cast<unsigned>(
        std::clamp<int64_t>(rows, 1, static_cast<int64_t>(l.maxGrid())));
  }
  template <typename Args>
  Status run(const char *entry, unsigned g, const Args &a) const {
    if (noScratch)
      return fail(k(), "cannot allocate scratch memory on the device");
    return l.launch(entry, g, l.blockSize(), &a, sizeof a);
  }
  template <typename T> T *scratch(size_t count) const {
    void *p = l.scratch(count * sizeof(T));
    noScratch = noScratch || !p;
    return static_cast<T *>(p);
  }
  mutable bool noScratch = false;
};

bool isF32(const View &v) { return !v.data || v.dtype == DType::F32; }

/// Rows of a [.., C] tensor.
int64_t rowsOf(const View &v, int64_t C) { return C ? v.numel() / C : 0; }

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

Status elementwise(const Call &c, const std::string &entry) {
  const KernelContext &ctx = c.ctx;
  const Shape &shape = *ctx.out[0].shape;
  if (shape.size() > KILN_CUDA_MAX_RANK)
    return fail(c.k(), "a result of rank " + std::to_string(shape.size()) +
                           ", more than " + std::to_string(KILN_CUDA_MAX_RANK));
  KilnElementwiseArgs a{};
  a.rank = static_cast<int>(shape.size());
  a.total = numel(shape);
  for (size_t d = 0; d < shape.size(); ++d)
    a.dims[d] = shape[d];
  if (ctx.in.size() > KILN_CUDA_MAX_OPERANDS)
    return fail(c.k(), std::to_string(ctx.in.size()) + " operands");
  for (size_t i = 0; i < ctx.in.size(); ++i) {
    const View &v = ctx.in[i];
    const Shape &s = *v.shape;
    a.in[i].data = v.as<float>();
    int64_t stride = 1;
    for (int d = static_cast<int>(s.size()) - 1; d >= 0; --d) {
      int od = a.rank - (static_cast<int>(s.size()) - d);
      a.in[i].strides[od] = s[d] == 1 ? 0 : stride;
      stride *= s[d];
    }
    a.in[i].contiguous = v.numel() == a.total;
  }
  a.out = ctx.out[0].as<float>();
  if (a.total == 0)
    return Status::ok();
  return c.run(entry.c_str(), c.grid(a.total), a);
}

//===----------------------------------------------------------------------===//
// Norms and cross-entropy
//===----------------------------------------------------------------------===//

Status norm(const Call &c) {
  const KernelContext &ctx = c.ctx;
  Op op = c.k().op();
  KilnNormArgs a{};
  if (op == Op::AddNorm) {
    const kart::FusedNormAttrs *f = c.k().attrs_as_FusedNormAttrs();
    a.centered = f->kind() == kart::NormKind::LayerNorm;
    a.eps = static_cast<float>(f->eps());
    a.residual = ctx.in[1].as<float>();
    a.weight = ctx.in[2].as<float>();
    a.bias = a.centered ? ctx.in[3].as<float>() : nullptr;
    a.sum = ctx.out[0].as<float>();
    a.y = ctx.out[1].as<float>();
  } else {
    a.centered = op == Op::LayerNorm;
    a.eps = static_cast<float>(c.k().attrs_as_NormAttrs()->eps());
    a.weight = ctx.in[1].as<float>();
    a.bias = a.centered ? ctx.in[2].as<float>() : nullptr;
    a.y = ctx.out[0].as<float>();
  }
  a.x = ctx.in[0].as<float>();
  a.C = static_cast<int>(ctx.in[0].shape->back());
  a.rows = rowsOf(ctx.in[0], a.C);
  if (a.rows == 0)
    return Status::ok();
  return c.run("kiln_norm", c.rowsGrid(a.rows), a);
}

Status normGrad(const Call &c) {
  const KernelContext &ctx = c.ctx;
  const kart::FusedNormAttrs *f = c.k().attrs_as_FusedNormAttrs();
  KilnNormGradArgs a{};
  a.centered = f->kind() == kart::NormKind::LayerNorm;
  a.eps = static_cast<float>(f->eps());
  a.g = ctx.in[0].as<float>();
  a.x = ctx.in[1].as<float>();
  a.weight = ctx.in[2].as<float>();
  a.dx = ctx.out[0].as<float>();
  a.dweight = ctx.out[1].as<float>();
  a.dbias = ctx.out[2].as<float>();
  a.C = static_cast<int>(ctx.in[1].shape->back());
  a.rows = rowsOf(ctx.in[1], a.C);
  a.stats =
      c.scratch<float>(static_cast<size_t>(2 * std::max<int64_t>(a.rows, 1)));
  if (a.rows > 0)
    if (Status s = c.run("kiln_norm_grad_rows", c.rowsGrid(a.rows), a); !s)
      return s;
  // With no rows the columns kernel still writes the zero sums.
  return c.run("kiln_norm_grad_columns", c.grid(a.C), a);
}

/// SoftmaxCrossEntropy (loss, dlogits), CrossEntropy (loss) and
/// CrossEntropyGrad (dlogits).
Status crossEntropy(const Call &c) {
  const KernelContext &ctx = c.ctx;
  Op op = c.k().op();
  KilnCrossEntropyArgs a{};
  a.logits = ctx.in[0].as<float>();
  a.targets = ctx.in[1].data;
  a.targets64 = ctx.in[1].dtype == DType::I64;
  a.V = static_cast<int>(ctx.in[0].shape->back());
  a.rows = rowsOf(ctx.in[0], a.V);
  a.ignore = c.k().attrs_as_CrossEntropyAttrs()->ignore_index();
  a.error = c.l.errorWord();
  if (op != Op::CrossEntropy)
    a.dloss = ctx.in[2].as<float>();
  if (op == Op::SoftmaxCrossEntropy) {
    a.loss = ctx.out[0].as<float>();
    a.dlogits = ctx.out[1].as<float>();
  } else if (op == Op::CrossEntropy) {
    a.loss = ctx.out[0].as<float>();
  } else {
    a.dlogits = ctx.out[0].as<float>();
  }
  // Scratch: the count, then a term per row.
  size_t rows = static_cast<size_t>(std::max<int64_t>(a.rows, 1));
  double *space = c.scratch<double>(1 + rows);
  a.counted = reinterpret_cast<long long *>(space);
  a.terms = space + 1;
  if (Status s = c.run("kiln_xent_count", 1, a); !s)
    return s;
  if (a.rows > 0)
    if (Status s = c.run("kiln_xent_rows", c.rowsGrid(a.rows), a); !s)
      return s;
  if (a.loss)
    return c.run("kiln_xent_finish", 1, a);
  return Status::ok();
}

//===----------------------------------------------------------------------===//
// Embeddings, copies, reductions
//===----------------------------------------------------------------------===//

Status fill(const Call &c, const View &v, float value) {
  KilnFillArgs a{v.as<float>(), v.numel(), value};
  if (a.n == 0)
    return Status::ok();
  return c.run("kiln_fill", c.grid(a.n), a);
}

Status embedding(const Call &c) {
  const KernelContext &ctx = c.ctx;
  bool grad = c.k().op() == Op::EmbeddingGrad;
  if (!grad && ctx.in[0].quant)
    return fail(c.k(), "a quantized embedding table (the CUDA backend "
                       "reads f32 tables)");
  KilnEmbeddingArgs a{};
  a.table = ctx.in[0].as<float>();
  a.ids = ctx.in[1].data;
  a.ids64 = ctx.in[1].dtype == DType::I64;
  a.out = ctx.out[0].as<float>();
  a.n = ctx.in[1].numel();
  const Shape &rows = grad ? *ctx.out[0].shape : *ctx.in[0].shape;
  a.V = rows[0];
  a.D = static_cast<int>(rows[1]);
  a.error = c.l.errorWord();
  if (grad)
    if (Status s = fill(c, ctx.out[0], 0.0f); !s)
      return s;
  if (a.n * a.D == 0)
    return Status::ok();
  return c.run(grad ? "kiln_embedding_grad" : "kiln_embedding",
               c.grid(a.n * a.D), a);
}

/// Copies `dims` elements from `in` (strides, offset) to `out`.
Status copy(const Call &c, const View &in, const View &out, const Shape &dims,
            const Shape &inStrides, int64_t inOffset, const Shape &outStrides,
            int64_t outOffset, float scale = 1.0f) {
  if (dims.size() > KILN_CUDA_MAX_RANK)
    return fail(c.k(), "rank " + std::to_string(dims.size()));
  if (dtypeSize(in.dtype) != 4 || (scale != 1.0f && in.dtype != DType::F32))
    return fail(c.k(), std::string("moves ") + dtypeName(in.dtype) +
                           " values; the CUDA backend's copies move 4-byte "
                           "elements");
  KilnCopyArgs a{};
  a.in = in.as<float>();
  a.out = out.as<float>();
  a.rank = static_cast<int>(dims.size());
  for (size_t d = 0; d < dims.size(); ++d) {
    a.dims[d] = dims[d];
    a.in_strides[d] = inStrides[d];
    a.out_strides[d] = outStrides[d];
  }
  a.in_offset = inOffset;
  a.out_offset = outOffset;
  a.total = numel(dims);
  a.scale = scale;
  a.raw = in.dtype != DType::F32;
  if (a.total == 0)
    return Status::ok();
  return c.run("kiln_copy", c.grid(a.total), a);
}

/// The same elements in another shape (Reshape, ReshapeLike, inference
/// Dropout): a flat copy unless the output took over the input.
Status identity(const Call &c) {
  const View &in = c.ctx.in[0], &out = c.ctx.out[0];
  if (in.data == out.data)
    return Status::ok();
  Shape flat = {in.numel()};
  return copy(c, in, out, flat, {1}, 0, {1}, 0);
}

/// `count` slices of `from` along `axis` from `fromStart` into `to` at
/// `toStart` (runtime/cpu's copyAxis).
Status copyAxis(const Call &c, const View &from, int64_t fromStart,
                const View &to, int64_t toStart, int64_t count, int64_t axis) {
  Shape dims = *from.shape;
  dims[axis] = count;
  Shape fs = stridesOf(*from.shape), ts = stridesOf(*to.shape);
  return copy(c, from, to, dims, fs, fromStart * fs[axis], ts,
              toStart * ts[axis]);
}

Status slice(const Call &c) {
  const kart::SliceAttrs *a = c.k().attrs_as_SliceAttrs();
  const View &in = c.ctx.in[0], &out = c.ctx.out[0];
  int64_t axis = axisOf(a->axis(), in.shape->size());
  return copyAxis(c, in, a->start(), out, 0, (*out.shape)[axis], axis);
}

Status concat(const Call &c) {
  const View &out = c.ctx.out[0];
  int64_t axis = axisOf(c.k().attrs_as_AxisAttrs()->axis(), out.shape->size());
  int64_t at = 0;
  for (const View &in : c.ctx.in) {
    if (Status s = copyAxis(c, in, 0, out, at, (*in.shape)[axis], axis); !s)
      return s;
    at += (*in.shape)[axis];
  }
  return Status::ok();
}

/// Split and ConcatGrad: in[0] cut along the axis into the outputs.
Status split(const Call &c) {
  const View &in = c.ctx.in[0];
  int64_t axis = axisOf(c.k().attrs_as_AxisAttrs()->axis(), in.shape->size());
  int64_t at = 0;
  for (const View &out : c.ctx.out) {
    if (Status s = copyAxis(c, in, at, out, 0, (*out.shape)[axis], axis); !s)
      return s;
    at += (*out.shape)[axis];
  }
  return Status::ok();
}

Status sliceGrad(const Call &c) {
  const kart::SliceGradAttrs *a = c.k().attrs_as_SliceGradAttrs();
  const View &g = c.ctx.in[0], &out = c.ctx.out[0];
  int64_t axis = axisOf(a->axis(), out.shape->size());
  if (Status s = fill(c, out, 0.0f); !s)
    return s;
  return copyAxis(c, g, 0, out, a->start(), (*g.shape)[axis], axis);
}

Status zeros(const Call &c) { return fill(c, c.ctx.out[0], 0.0f); }

Status transpose(const Call &c) {
  const View &in = c.ctx.in[0], &out = c.ctx.out[0];
  const auto &perm = *c.k().attrs_as_TransposeAttrs()->perm();
  Shape is = stridesOf(*in.shape), st(perm.size());
  for (size_t d = 0; d < perm.size(); ++d)
    st[d] = is[axisOf(perm[d], perm.size())];
  return copy(c, in, out, *out.shape, st, 0, stridesOf(*out.shape), 0);
}

/// The reduced axes of a reduction over `rank` dimensions.
std::vector<bool> reducedAxes(const flatbuffers::Vector<int64_t> &axes,
                              size_t rank) {
  std::vector<bool> red(rank, false);
  for (int64_t a : axes)
    red[axisOf(a, rank)] = true;
  return red;
}

/// The reduction of `xs`-shaped `in` over the dimensions `red` marks
/// (kind sum; the caller sets another).
KilnReduceArgs reduceArgs(const float *in, float *out, const Shape &xs,
                          const std::vector<bool> &red) {
  Shape st = stridesOf(xs);
  KilnReduceArgs a{};
  a.in = in;
  a.out = out;
  a.total = a.count = 1;
  for (size_t d = 0; d < xs.size(); ++d) {
    if (red[d]) {
      a.red[a.red_rank] = xs[d];
      a.red_strides[a.red_rank++] = st[d];
      a.count *= xs[d];
    } else {
      a.kept[a.kept_rank] = xs[d];
      a.kept_strides[a.kept_rank++] = st[d];
      a.total *= xs[d];
    }
  }
  return a;
}

Status reduce(const Call &c) {
  const View &in = c.ctx.in[0];
  const Shape &xs = *in.shape;
  if (xs.size() > KILN_CUDA_MAX_RANK)
    return fail(c.k(), "rank " + std::to_string(xs.size()));
  KilnReduceArgs a =
      reduceArgs(in.as<float>(), c.ctx.out[0].as<float>(), xs,
                 reducedAxes(*c.k().attrs_as_ReduceAttrs()->axes(), xs.size()));
  Op op = c.k().op();
  a.kind = op == Op::ReduceMax ? 2 : op == Op::ReduceMean ? 1 : 0;
  if (a.total == 0)
    return Status::ok();
  return c.run("kiln_reduce", c.grid(a.total), a);
}

/// ReduceGrad of a sum or mean: the gradient broadcast back over the
/// reduced axes (divided by their count for a mean).
Status reduceGrad(const Call &c) {
  const kart::ReduceGradAttrs *attrs = c.k().attrs_as_ReduceGradAttrs();
  if (attrs->kind() == kart::ReduceKind::Max)
    return fail(c.k(), "the gradient of a max reduction is not generated "
                       "for CUDA yet");
  const View &g = c.ctx.in[0], &out = c.ctx.out[0];
  const Shape &xs = *c.ctx.in[1].shape;
  std::vector<bool> red = reducedAxes(*attrs->axes(), xs.size());
  Shape gs(xs.size(), 0);
  int64_t stride = 1, count = 1;
  for (int64_t d = static_cast<int64_t>(xs.size()) - 1; d >= 0; --d) {
    if (red[d]) {
      count *= xs[d];
    } else {
      gs[d] = stride;
      stride *= xs[d];
    }
  }
  float scale = attrs->kind() == kart::ReduceKind::Mean
                    ? 1.0f / static_cast<float>(count)
                    : 1.0f;
  return copy(c, g, out, xs, gs, 0, stridesOf(xs), 0, scale);
}

//===----------------------------------------------------------------------===//
// RoPE, dropout, global norm, optimizer
//===----------------------------------------------------------------------===//

Status rope(const Call &c) {
  const KernelContext &ctx = c.ctx;
  const kart::RopeAttrs *attrs = c.k().attrs_as_RopeAttrs();
  const Shape &xs = *ctx.in[0].shape;
  KilnRopeArgs a{};
  a.x = ctx.in[0].as<float>();
  a.y = ctx.out[0].as<float>();
  if (ctx.in.size() > 1 && ctx.in[1].data) {
    a.positions = ctx.in[1].data;
    a.positions64 = ctx.in[1].dtype == DType::I64;
    a.per_batch = ctx.in[1].shape->size() != 1;
  }
  a.B = xs[0];
  a.T = xs[1];
  a.C = static_cast<int>(xs[2]);
  a.head_dim = static_cast<int>(attrs->head_dim());
  a.theta = attrs->theta();
  a.half = attrs->style() == kart::RopeStyle::Half;
  a.inverse = attrs->inverse();
  int64_t work = ctx.in[0].numel() / 2;
  if (work == 0)
    return Status::ok();
  return c.run("kiln_rope", c.grid(work), a);
}

Status dropout(const Call &c) {
  const kart::DropoutAttrs *attrs = c.k().attrs_as_DropoutAttrs();
  if (!c.ctx.training || attrs->rate() <= 0)
    return identity(c);
  KilnDropoutArgs a{};
  a.x = c.ctx.in[0].as<float>();
  a.y = c.ctx.out[0].as<float>();
  a.n = c.ctx.in[0].numel();
  // The CPU kernel's stream (runtime/cpu/GradKernels.cpp).
  a.base = SplitMix64{c.ctx.seed ^ (static_cast<uint64_t>(attrs->seed()) *
                                    0xd1b54a32d192ed03ull)}
               .next();
  a.rate = attrs->rate();
  a.keep = static_cast<float>(1.0 / (1.0 - a.rate));
  if (a.n == 0)
    return Status::ok();
  return c.run("kiln_dropout", c.grid(a.n), a);
}

Status globalNorm(const Call &c) {
  // Each tensor's blocks write partial sums, added in order at the end.
  std::vector<unsigned> grids;
  int64_t partials = 0;
  for (const View &v : c.ctx.in) {
    grids.push_back(std::min(c.grid(v.numel()), 64u));
    partials += grids.back();
  }
  KilnSumSquaresArgs a{};
  a.partial =
      c.scratch<double>(static_cast<size_t>(std::max<int64_t>(partials, 1)));
  a.partials = partials;
  for (size_t i = 0; i < c.ctx.in.size(); ++i) {
    a.x = c.ctx.in[i].as<float>();
    a.n = c.ctx.in[i].numel();
    if (Status s = c.run("kiln_sum_squares", grids[i], a); !s)
      return s;
    a.first += grids[i];
  }
  a.out = c.ctx.out[0].as<float>();
  return c.run("kiln_norm_finish", 1, a);
}

/// AdamW or SGD on one parameter, with the moments the launcher keeps.
Status optimizerUpdate(const Call &c) {
  const KernelContext &ctx = c.ctx;
  if (ctx.paramIndex < 0)
    return fail(c.k(), "has no parameter to update");
  if (ctx.paramFrozen)
    return fail(c.k(), "updates a frozen parameter (trainable = false)");
  const kart::OptimizerAttrs *attrs = c.k().attrs_as_OptimizerAttrs();
  KilnOptimizerArgs a{};
  a.adamw = attrs->kind() == kart::OptimizerKind::AdamW;
  a.p = ctx.in[0].as<float>();
  a.g = ctx.in[1].as<float>();
  a.norm = ctx.in[2].as<float>();
  a.lr = ctx.in[3].as<float>();
  a.step = ctx.in[4].as<float>();
  a.n = ctx.in[0].numel();
  if (Status s = c.l.moments(ctx.paramIndex, a.n, a.adamw, a.m, a.v); !s)
    return fail(c.k(), s.message());
  a.beta1 = static_cast<float>(attrs->beta1());
  a.beta2 = static_cast<float>(attrs->beta2());
  a.eps = static_cast<float>(attrs->eps());
  a.weight_decay = static_cast<float>(attrs->weight_decay());
  a.momentum = static_cast<float>(attrs->momentum());
  a.max_norm = attrs->max_norm();
  if (a.n == 0)
    return Status::ok();
  return c.run("kiln_optimizer", c.grid(a.n), a);
}

//===----------------------------------------------------------------------===//
// Matrix products and attention
//===----------------------------------------------------------------------===//

/// Element strides of operand `s`'s batch dimensions along the output's
/// batch dimensions `batch` (aligned at the last, 0 where it broadcasts).
void batchStrides(const Shape &s, const Shape &batch, long long *out) {
  int64_t stride = s[s.size() - 2] * s.back();
  int64_t sb = static_cast<int64_t>(s.size()) - 2;
  for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {
    int64_t sd = d - (static_cast<int64_t>(batch.size()) - sb);
    out[d] = sd >= 0 && s[sd] != 1 ? stride : 0;
    if (sd >= 0)
      stride *= s[sd];
  }
}

/// The batch dimensions of a product whose operands' batches are laid out
/// with `as` and `bs` element strides (0 where one broadcasts), split into
/// an outer part walked on the host and an inner run of dimensions one
/// strided call covers (a BLAS call has one stride per operand).
struct BatchSplit {
  int inner = 0;     // the first inner dimension
  int64_t count = 1; // products in the inner run
  int64_t strideA = 0, strideB = 0;
};

BatchSplit splitBatches(const KilnMatmulArgs &a) {
  BatchSplit s;
  s.inner = a.batch_rank;
  // Walk outwards while each operand's stride continues the run.
  for (int d = a.batch_rank - 1; d >= 0; --d) {
    if (a.batch_dims[d] == 1) {
      s.inner = d;
      continue;
    }
    if (s.count == 1) {
      s.strideA = a.a_strides[d];
      s.strideB = a.b_strides[d];
    } else if (a.a_strides[d] != s.strideA * s.count ||
               a.b_strides[d] != s.strideB * s.count) {
      break;
    }
    s.count *= a.batch_dims[d];
    s.inner = d;
  }
  return s;
}

/// The BLAS calls that compute kiln's row-major product `a` (column-major:
/// D^T = op(B)^T op(A)^T, so B is the call's first operand), and whether
/// the product's epilogue (bias, scale, activation, residual) is left to
/// kiln_matmul_epilogue. False when the product stays on kiln_matmul.
bool planGemm(const KilnMatmulArgs &a, std::vector<GemmCall> &calls,
              bool &epilogue) {
  if (a.K == 0 || a.M > INT32_MAX || a.N > INT32_MAX || a.K > INT32_MAX)
    return false;
  GemmCall g;
  g.a = a.b;
  g.transA = a.tb;
  g.lda = a.tb ? a.K : a.N;
  g.b = a.a;
  g.transB = a.ta;
  g.ldb = a.ta ? a.M : a.K;
  g.m = a.N;
  g.n = a.M;
  g.k = a.K;
  g.ldc = a.N;
  g.d = a.out;
  // cuBLASLt adds C and the bias before its activation, kiln scales the
  // biased product and adds the residual after the activation: only what
  // agrees is fused (GELU and SiLU run in kiln's epilogue kernel).
  bool fused = a.activation == 0 || (a.activation == 1 && !a.residual);
  if (a.bias && a.scale != 1.0f)
    fused = false;
  bool foldReduce = a.reduce > 1 && a.ta && !a.tb &&
                    a.a_reduce_stride == a.K * a.M &&
                    a.b_reduce_stride == a.K * a.N;
  if (a.reduce > 1 && !foldReduce)
    fused = false; // the products accumulate in D first
  // The epilogue kernel works in place on D: a residual that is D would be
  // gone by then.
  if (!fused && a.residual && a.residual == a.out)
    return false;
  epilogue = !fused;
  if (fused) {
    g.alpha = a.scale;
    g.bias = a.bias;
    g.activation = a.activation == 1 ? GemmCall::Activation::Relu
                                     : GemmCall::Activation::None;
    if (a.residual) {
      g.c = a.residual;
      g.beta = 1.0f;
    }
  }
  calls.clear();
  if (a.reduce > 1) {
    if (foldReduce) { // the batches stacked along K: one product
      g.k = a.reduce * a.K;
      calls.push_back(g);
      return true;
    }
    for (long long r = 0; r < a.reduce; ++r) {
      GemmCall p = g;
      p.a = a.b + r * a.b_reduce_stride;
      p.b = a.a + r * a.a_reduce_stride;
      if (r > 0) { // accumulate
        p.c = p.d;
        p.beta = 1.0f;
      }
      calls.push_back(p);
    }
    return true;
  }
  g.strideC = a.M * a.N;
  BatchSplit split = splitBatches(a);
  // A shared B and a contiguous, untransposed A: the batches are more rows
  // of one product.
  if (split.inner == 0 && split.count > 1 && split.strideB == 0 && !a.ta &&
      split.strideA == a.M * a.K && split.count * a.M <= INT32_MAX) {
    g.n = split.count * a.M;
    calls.push_back(g);
    return true;
  }
  if (split.count > INT32_MAX)
    return false;
  g.batch = split.count;
  g.strideA = split.strideB; // the call's A is kiln's B
  g.strideB = split.strideA;
  int64_t outer = 1;
  for (int d = 0; d < split.inner; ++d)
    outer *= a.batch_dims[d];
  for (int64_t o = 0; o < outer; ++o) {
    int64_t aOff = 0, bOff = 0, rem = o;
    for (int d = split.inner - 1; d >= 0; --d) {
      int64_t q = rem % a.batch_dims[d];
      rem /= a.batch_dims[d];
      aOff += q * a.a_strides[d];
      bOff += q * a.b_strides[d];
    }
    GemmCall p = g;
    p.a = a.b + bOff;
    p.b = a.a + aOff;
    int64_t dOff = o * split.count * a.M * a.N;
    p.d = a.out + dOff;
    if (p.c)
      p.c += dOff;
    calls.push_back(p);
  }
  return true;
}

/// Matmul and FusedMatmul: on the BLAS library when the launcher has one
/// (with kiln_matmul_epilogue for what it cannot fuse), else on the
/// library's tiled kernel.
Status matmul(const Call &c) {
  const KernelContext &ctx = c.ctx;
  if (ctx.in[0].quant || ctx.in[1].quant)
    return fail(c.k(), "a quantized operand (the CUDA backend multiplies "
                       "f32 matrices)");
  const Shape &as = *ctx.in[0].shape, &bs = *ctx.in[1].shape,
              &os = *ctx.out[0].shape;
  KilnMatmulArgs a{};
  a.a = ctx.in[0].as<float>();
  a.b = ctx.in[1].as<float>();
  a.out = ctx.out[0].as<float>();
  a.scale = 1.0f;
  bool reduceBatch = false;
  if (c.k().op() == Op::FusedMatmul) {
    const kart::FusedMatmulAttrs *f = c.k().attrs_as_FusedMatmulAttrs();
    a.ta = f->transpose_a();
    a.tb = f->transpose_b();
    reduceBatch = f->reduce_batch();
    a.scale = static_cast<float>(f->scale());
    a.activation = static_cast<int>(f->activation());
    a.bias = ctx.in[2].as<float>();
    a.residual = ctx.in[3].as<float>();
  } else {
    const kart::MatmulAttrs *m = c.k().attrs_as_MatmulAttrs();
    a.ta = m->transpose_a();
    a.tb = m->transpose_b();
  }
  a.M = os[os.size() - 2];
  a.N = os.back();
  a.K = a.ta ? as[as.size() - 2] : as.back();
  a.batches = a.reduce = 1;
  if (reduceBatch) {
    a.reduce = numel(Shape(as.begin(), as.end() - 2));
    a.a_reduce_stride = as[as.size() - 2] * as.back();
    a.b_reduce_stride = bs[bs.size() - 2] * bs.back();
  } else {
    Shape batch(os.begin(), os.end() - 2);
    if (batch.size() > KILN_CUDA_MAX_RANK)
      return fail(c.k(), "rank " + std::to_string(os.size()));
    a.batch_rank = static_cast<int>(batch.size());
    for (size_t d = 0; d < batch.size(); ++d)
      a.batch_dims[d] = batch[d];
    a.batches = numel(batch);
    batchStrides(as, batch, a.a_strides);
    batchStrides(bs, batch, a.b_strides);
  }
  if (a.batches * a.M * a.N == 0)
    return Status::ok();
  std::vector<GemmCall> calls;
  bool epilogue = false;
  if (c.l.hasGemm() && planGemm(a, calls, epilogue)) {
    for (const GemmCall &g : calls)
      if (Status s = c.l.gemm(g); !s)
        return fail(c.k(), s.message());
    if (!epilogue)
      return Status::ok();
    if (!a.bias && !a.residual && a.scale == 1.0f && a.activation == 0)
      return Status::ok();
    return c.run("kiln_matmul_epilogue", c.grid(a.batches * a.M * a.N), a);
  }
  int64_t tiles = a.batches * ((a.M + 63) / 64) * ((a.N + 63) / 64);
  unsigned grid = static_cast<unsigned>(
      std::min<int64_t>(tiles, static_cast<int64_t>(c.l.maxGrid())));
  return c.l.launch("kiln_matmul", grid, KILN_CUDA_MATMUL_THREADS, &a,
                    sizeof a);
}

/// Why heads as wide as the queries at `ctx.in[q]` and the values at
/// `ctx.in[v]` do not fit the attention kernels' blocks of `block`
/// threads (each thread holds up to 8 of a row's values), or "".
std::string headWidthLimit(const kart::AttentionAttrs &attrs,
                           const KernelContext &ctx, size_t q, size_t v,
                           unsigned block) {
  int64_t D = (*ctx.in[q].shape)[2] / attrs.heads(),
          Dv = (*ctx.in[v].shape)[2] / attrs.kv_heads();
  int64_t widest = std::min<int64_t>(KILN_CUDA_MAX_HEAD, 8 * int64_t(block));
  if (D > widest || Dv > widest)
    return "heads of " + std::to_string(std::max(D, Dv)) +
           " values, more than the CUDA attention kernels' " +
           std::to_string(widest);
  return "";
}

/// Why the attention kernels cannot take kernel `k`, or "".
std::string attentionLimit(const kart::Kernel &k, const KernelContext *ctx,
                           unsigned block) {
  const kart::AttentionAttrs *attrs = k.attrs_as_AttentionAttrs();
  if (attrs->pattern()->kind() != kart::PatternKind::Dense)
    return std::string("a ") +
           kart::EnumNamePatternKind(attrs->pattern()->kind()) +
           " attention pattern (the CUDA attention kernels are dense, "
           "causal or not)";
  if (!ctx)
    return "";
  size_t q = k.op() == Op::AttentionGrad ? 1 : 0;
  return headWidthLimit(*attrs, *ctx, q, q + 2, block);
}

Status attention(const Call &c) {
  const KernelContext &ctx = c.ctx;
  if (std::string why = attentionLimit(c.k(), &ctx, c.l.blockSize());
      !why.empty())
    return fail(c.k(), why);
  bool grad = c.k().op() == Op::AttentionGrad;
  size_t q = grad ? 1 : 0;
  const kart::AttentionAttrs *attrs = c.k().attrs_as_AttentionAttrs();
  KilnAttentionArgs a{};
  a.q = ctx.in[q].as<float>();
  a.k = ctx.in[q + 1].as<float>();
  a.v = ctx.in[q + 2].as<float>();
  const Shape &qs = *ctx.in[q].shape, &ks = *ctx.in[q + 1].shape,
              &vs = *ctx.in[q + 2].shape;
  a.B = qs[0];
  a.Tq = qs[1];
  a.Tk = ks[1];
  a.H = static_cast<int>(attrs->heads());
  a.Hkv = static_cast<int>(attrs->kv_heads());
  a.D = static_cast<int>(qs[2] / a.H);
  a.Dv = static_cast<int>(vs[2] / a.Hkv);
  a.scale = static_cast<float>(attrs->scale());
  a.causal = attrs->pattern()->causal();
  a.offset = a.causal ? a.Tk - a.Tq : 0;
  const View &mask = ctx.in[grad ? 6 : 3];
  if (mask.data) {
    a.mask = mask.data;
    switch (mask.dtype) {
    case DType::F32:
      a.mask_type = 1;
      break;
    case DType::I32:
      a.mask_type = 2;
      break;
    case DType::I64:
      a.mask_type = 3;
      break;
    case DType::Bool:
      a.mask_type = 4;
      break;
    default:
      return fail(c.k(),
                  std::string("a key mask of type ") + dtypeName(mask.dtype));
    }
  }
  const View &bias = ctx.in[grad ? 7 : 4];
  if (bias.data) {
    const Shape &bs = *bias.shape;
    if (bs.size() > 4)
      return fail(c.k(),
                  "an attention bias of rank " + std::to_string(bs.size()));
    // Element strides over [B, H, Tq, Tk], right-aligned, 0 where the
    // bias broadcasts.
    int64_t stride = 1;
    for (size_t i = 0; i < bs.size(); ++i) {
      size_t d = bs.size() - 1 - i;
      a.bias_strides[3 - i] = bs[d] == 1 ? 0 : stride;
      stride *= bs[d];
    }
    a.bias = bias.as<float>();
  }
  if (!grad) {
    a.out = ctx.out[0].as<float>();
    a.out_lse = ctx.out.size() > 1 ? ctx.out[1].as<float>() : nullptr;
    int64_t rows = a.B * a.H * a.Tq;
    return rows ? c.run("kiln_attention", c.rowsGrid(rows), a) : Status::ok();
  }
  a.g = ctx.in[0].as<float>();
  a.o = ctx.in[4].as<float>();
  a.lse = ctx.in[5].as<float>();
  a.dq = ctx.out[0].as<float>();
  a.dk = ctx.out[1].as<float>();
  a.dv = ctx.out[2].as<float>();
  int64_t rows = a.B * a.H * a.Tq, keys = a.B * a.Hkv * a.Tk;
  // Scratch: each row's di, then (with a bias) every ds for dbias.
  size_t diFloats =
      static_cast<size_t>(std::max<int64_t>(rows, 1) + 63) / 64 * 64;
  size_t dsFloats = bias.data ? static_cast<size_t>(rows * a.Tk) : 0;
  a.di = c.scratch<float>(diFloats + dsFloats);
  a.ds = bias.data ? a.di + diFloats : nullptr;
  if (rows)
    if (Status s = c.run("kiln_attention_grad_q", c.rowsGrid(rows), a); !s)
      return s;
  if (keys)
    if (Status s = c.run("kiln_attention_grad_kv", c.rowsGrid(keys), a); !s)
      return s;
  if (!bias.data)
    return Status::ok();
  // dbias: ds summed over the dimensions the bias broadcasts along.
  const Shape &bs = *bias.shape;
  Shape full = {a.B, a.H, a.Tq, a.Tk};
  std::vector<bool> broadcast(4);
  for (size_t d = 0; d < 4; ++d)
    broadcast[d] = d + bs.size() < 4 || bs[d + bs.size() - 4] == 1;
  KilnReduceArgs r = reduceArgs(a.ds, ctx.out[3].as<float>(), full, broadcast);
  return c.run("kiln_reduce", c.grid(r.total), r);
}

/// Why the cached attention kernels cannot take kernel `k` (on `ctx`'s
/// operands, when given, with blocks of `block` threads), or "".
std::string cachedAttentionLimit(const kart::Kernel &k,
                                 const KernelContext *ctx, unsigned block) {
  const kart::AttentionPattern *pattern =
      k.attrs_as_AttentionAttrs()->pattern();
  if (pattern->kind() != kart::PatternKind::Dense &&
      pattern->kind() != kart::PatternKind::SlidingWindow)
    return std::string("decoding with a ") +
           kart::EnumNamePatternKind(pattern->kind()) +
           " attention pattern (the CUDA cached attention is dense or "
           "a sliding window)";
  if (!ctx)
    return "";
  return headWidthLimit(*k.attrs_as_AttentionAttrs(), *ctx, 0, 2, block);
}

/// CachedAttention: the queries over the cache and the new keys, then the
/// new keys and values stored (a second launch: a rolling cache's slot
/// may still be read by an earlier query of the step).
Status cachedAttention(const Call &c) {
  const KernelContext &ctx = c.ctx;
  if (std::string why = cachedAttentionLimit(c.k(), &ctx, c.l.blockSize());
      !why.empty())
    return fail(c.k(), why);
  const kart::AttentionAttrs *attrs = c.k().attrs_as_AttentionAttrs();
  const Shape &qs = *ctx.in[0].shape, &ks = *ctx.in[3].shape,
              &vs = *ctx.in[4].shape;
  KilnCachedAttentionArgs a{};
  a.q = ctx.in[0].as<float>();
  a.k = ctx.in[1].as<float>();
  a.v = ctx.in[2].as<float>();
  a.kc = ctx.in[3].as<float>();
  a.vc = ctx.in[4].as<float>();
  a.pos = ctx.in[5].as<int32_t>();
  a.len = ctx.in[6].as<int32_t>();
  a.out = ctx.out[0].as<float>();
  a.B = qs[0];
  a.T = qs[1];
  a.S = ks[1];
  a.H = static_cast<int>(attrs->heads());
  a.Hkv = static_cast<int>(attrs->kv_heads());
  a.D = static_cast<int>(qs[2] / a.H);
  a.Dv = static_cast<int>(vs[2] / a.Hkv);
  a.window = attrs->pattern()->kind() == kart::PatternKind::SlidingWindow
                 ? attrs->pattern()->window()
                 : 0;
  a.rolls = a.window > 0 && a.S >= a.window;
  a.scale = static_cast<float>(attrs->scale());
  a.error = c.l.errorWord();
  if (a.B * a.T == 0)
    return Status::ok();
  if (ctx.in.size() > 7 && ctx.in[7].data) {
    // The bucket of every distance a query can have to a key it sees
    // (below S: positions fit the cache, a window fits a rolling one),
    // computed as the CPU does.
    const kart::RelativePositionBucketAttrs *r = attrs->relative();
    std::vector<int32_t> table(static_cast<size_t>(a.S));
    for (int64_t d = 0; d < a.S; ++d)
      table[d] = attention::relativeBucket(-d, r->bidirectional(), r->buckets(),
                                           r->max_distance());
    int32_t *buckets = c.scratch<int32_t>(table.size());
    if (c.noScratch)
      return fail(c.k(), "cannot allocate scratch memory on the device");
    if (Status s =
            c.l.upload(buckets, table.data(), table.size() * sizeof(int32_t));
        !s)
      return s;
    a.relative = ctx.in[7].as<float>();
    a.buckets = buckets;
  }
  if (Status s = c.run("kiln_cached_attention", c.rowsGrid(a.B * a.T * a.H), a);
      !s)
    return s;
  return c.run("kiln_cached_store", c.rowsGrid(a.B * a.T), a);
}

Status relativeBuckets(const Call &c) {
  const Shape &os = *c.ctx.out[0].shape;
  const kart::RelativePositionBucketAttrs *attrs =
      c.k().attrs_as_RelativePositionBucketAttrs();
  std::vector<int32_t> table(static_cast<size_t>(os[0] * os[1]));
  for (int64_t i = 0; i < os[0]; ++i)
    for (int64_t j = 0; j < os[1]; ++j)
      table[i * os[1] + j] =
          attention::relativeBucket(j - i, attrs->bidirectional(),
                                    attrs->buckets(), attrs->max_distance());
  if (table.empty())
    return Status::ok();
  return c.l.upload(c.ctx.out[0].data, table.data(),
                    table.size() * sizeof(int32_t));
}

} // namespace

//===----------------------------------------------------------------------===//
// The table of ops
//===----------------------------------------------------------------------===//

namespace {

using LaunchFn = Status (*)(const Call &);

struct Row {
  Op op;
  LaunchFn launch; // null: elementwise (generated) or not yet supported
};

// The ops with a library kernel; the elementwise ones (the op table's
// kFusible) run as generated kernels; the rest are named by
// unsupportedReason.
const Row kRows[] = {
    {Op::LayerNorm, norm},
    {Op::RMSNorm, norm},
    {Op::AddNorm, norm},
    {Op::NormGrad, normGrad},
    {Op::SoftmaxCrossEntropy, crossEntropy},
    {Op::CrossEntropy, crossEntropy},
    {Op::CrossEntropyGrad, crossEntropy},
    {Op::Embedding, embedding},
    {Op::EmbeddingGrad, embedding},
    {Op::Reshape, identity},
    {Op::ReshapeLike, identity},
    {Op::Slice, slice},
    {Op::Concat, concat},
    {Op::Split, split},
    {Op::ConcatGrad, split},
    {Op::SliceGrad, sliceGrad},
    {Op::ZerosLike, zeros},
    {Op::Transpose, transpose},
    {Op::ReduceSum, reduce},
    {Op::ReduceMean, reduce},
    {Op::ReduceMax, reduce},
    {Op::ReduceGrad, reduceGrad},
    {Op::Rope, rope},
    {Op::Dropout, dropout},
    {Op::GlobalNorm, globalNorm},
    {Op::OptimizerUpdate, optimizerUpdate},
    {Op::Matmul, matmul},
    {Op::FusedMatmul, matmul},
    {Op::Attention, attention},
    {Op::AttentionGrad, attention},
    {Op::RelativePositionBucket, relativeBuckets},
    {Op::CachedAttention, cachedAttention},
};

const Row *rowOf(Op op) {
  for (const Row &r : kRows)
    if (r.op == op)
      return &r;
  return nullptr;
}

} // namespace

std::string kiln::runtime::cuda::elementwiseEntry(const std::string &model,
                                                  const std::string &function,
                                                  size_t index) {
  std::string name =
      "kiln_" + model + "_" + function + "_k" + std::to_string(index);
  for (char &ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch)))
      ch = '_';
  return name;
}

bool kiln::runtime::cuda::isGeneratedElementwise(const kart::Kernel &k) {
  if (k.op() == Op::FusedElementwise)
    return k.attrs_as_ElementwiseProgram() != nullptr;
  const OpInfo *info = findOp(k.op());
  return info && info->has(kFusible);
}

std::string kiln::runtime::cuda::unsupportedReason(const kart::Kernel &k) {
  if (k.op() == Op::Attention || k.op() == Op::AttentionGrad)
    return attentionLimit(k, nullptr, 0);
  if (k.op() == Op::CachedAttention)
    return cachedAttentionLimit(k, nullptr, 0);
  if (isGeneratedElementwise(k) || rowOf(k.op()))
    return "";
  return std::string("the CUDA backend has no kernel for ") +
         kart::EnumNameOp(k.op()) + " yet";
}

Status kiln::runtime::cuda::launchKernel(const KernelContext &ctx,
                                         const std::string &model,
                                         const std::string &function,
                                         size_t index, Launcher &l) {
  const kart::Kernel &k = ctx.kernel;
  if (std::string why = unsupportedReason(k); !why.empty())
    return fail(k, why);
  Call call{ctx, l};
  if (isGeneratedElementwise(k)) {
    for (const View &v : ctx.in)
      if (!isF32(v))
        return fail(k, std::string("an operand of type ") + dtypeName(v.dtype) +
                           " (the generated elementwise kernels compute f32)");
    return elementwise(call, elementwiseEntry(model, function, index));
  }
  return rowOf(k.op())->launch(call);
}
