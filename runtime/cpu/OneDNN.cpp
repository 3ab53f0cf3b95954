//===- OneDNN.cpp - kernels that run as oneDNN primitives -----------------===//
//
// Where oneDNN has a primitive for an op — eltwise activations, binary ops,
// softmax, layer normalization, reductions, and transposes as reorders — the
// runtime uses it, created once per shape and cached. Each has a naive
// reference in Kernels.cpp; KILN_REFERENCE_KERNELS=1 selects the references,
// and the tests compare the two paths on every example model.
//
//===----------------------------------------------------------------------===//
#include "runtime/Kernels.h"
#include "runtime/cpu/KernelUtil.h"

#include <dnnl.hpp>

#include <cstdlib>
#include <iomanip>
#include <map>
#include <mutex>
#include <sstream>

using namespace kiln;
using namespace kiln::runtime;
using kart::Op;
using Shape = std::vector<int64_t>;
using dt = dnnl::memory::data_type;

/// One CPU engine for the process: primitives, memories and packed weights
/// of every model and function must agree on it.
static const dnnl::engine &cpuEngine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

/// Every primitive is created with a user-managed scratchpad: oneDNN's own
/// (library) scratchpad is shared by all primitives of the process and is
/// only safe when each primitive runs in the thread that created it, which
/// calls from several threads (Python releases the GIL) break. Each
/// execution context passes its own scratch memory instead.
static dnnl::primitive_attr userScratchpad(dnnl::primitive_attr attr = {}) {
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

struct PrimitiveCache::Impl {
  dnnl::engine engine = cpuEngine();
  dnnl::stream stream{engine};
  std::map<std::string, dnnl::primitive> prims;
  std::vector<uint8_t> scratch; // this context's scratchpad, grown on need
};

PrimitiveCache::PrimitiveCache() : impl_(std::make_unique<Impl>()) {}
PrimitiveCache::~PrimitiveCache() = default;

struct PackedWeights::Impl {
  dnnl::engine engine = cpuEngine();
  std::mutex mutex; // calls from several threads share the packed copies
  struct Copy {
    dnnl::memory::desc source; // how the parameter is read (transposed?)
    dnnl::memory::desc desc;
    dnnl::memory mem;
    uint64_t version = 0;
  };
  struct Param {
    uint64_t seen = UINT64_MAX; // the version last read unpacked
    uint64_t seenInRun = 0;     // and the call that read it
    std::vector<Copy> copies;   // one per layout (at most two)
  };
  std::map<int64_t, Param> params;
  std::map<std::string, dnnl::primitive> prims; // matmuls on packed weights
  std::map<std::string, dnnl::memory::desc> layouts;
  uint64_t run = 0;
};

PackedWeights::PackedWeights() : impl_(std::make_unique<Impl>()) {}
PackedWeights::~PackedWeights() = default;

void PackedWeights::beginRun() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  ++impl_->run;
}

size_t PackedWeights::bytes() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  size_t n = 0;
  for (const auto &[i, p] : impl_->params)
    for (const auto &c : p.copies)
      n += c.desc.get_size();
  return n;
}

namespace {

dnnl::memory::dims stridesOf(const dnnl::memory::dims &d) {
  dnnl::memory::dims st(d.size(), 1);
  for (int i = static_cast<int>(d.size()) - 2; i >= 0; --i)
    st[i] = st[i + 1] * d[i + 1];
  return st;
}

/// A dense row-major descriptor; rank 0 becomes [1] (oneDNN has no scalars).
dnnl::memory::desc plain(const Shape &s, dt type = dt::f32) {
  dnnl::memory::dims d(s.begin(), s.end());
  if (d.empty())
    d.push_back(1);
  return dnnl::memory::desc(d, type, stridesOf(d));
}

/// `s` left-padded with 1s to `rank` dimensions.
Shape padTo(const Shape &s, size_t rank) {
  Shape r(rank - s.size(), 1);
  r.insert(r.end(), s.begin(), s.end());
  return r;
}

/// The attributes a primitive depends on, so kernels that agree share one.
/// An attribute table not listed keys by the kernel itself (never shared,
/// never wrongly shared).
void writeAttrs(std::ostringstream &k, const kart::Kernel &kernel) {
  using kart::Attrs;
  switch (kernel.attrs_type()) {
  case Attrs::NONE:
    return;
  case Attrs::MatmulAttrs: {
    const auto *a = kernel.attrs_as_MatmulAttrs();
    k << a->transpose_a() << a->transpose_b();
    return;
  }
  case Attrs::FusedMatmulAttrs: {
    const auto *a = kernel.attrs_as_FusedMatmulAttrs();
    k << a->transpose_a() << a->transpose_b() << a->reduce_batch() << ","
      << a->scale() << "," << static_cast<int>(a->activation());
    return;
  }
  case Attrs::GeluAttrs:
    k << static_cast<int>(kernel.attrs_as_GeluAttrs()->approximation());
    return;
  case Attrs::ActivationGradAttrs:
    k << static_cast<int>(kernel.attrs_as_ActivationGradAttrs()->kind());
    return;
  case Attrs::AxisAttrs:
    k << kernel.attrs_as_AxisAttrs()->axis();
    return;
  case Attrs::NormAttrs:
    k << kernel.attrs_as_NormAttrs()->eps();
    return;
  case Attrs::ReduceAttrs: {
    const auto *a = kernel.attrs_as_ReduceAttrs();
    k << a->keepdim();
    for (int64_t v : *a->axes())
      k << "," << v;
    return;
  }
  case Attrs::TransposeAttrs:
    for (int64_t v : *kernel.attrs_as_TransposeAttrs()->perm())
      k << v << ",";
    return;
  default:
    k << "@" << static_cast<const void *>(&kernel);
    return;
  }
}

/// Identifies a primitive: the op, the attributes it depends on and the
/// operand shapes.
std::string keyOf(const KernelContext &c, const std::string &extra = "") {
  std::ostringstream k;
  k << std::setprecision(17) << static_cast<int>(c.kernel.op()) << "|" << extra
    << "|a";
  writeAttrs(k, c.kernel);
  for (const View &v : c.in)
    if (v.data) {
      k << "|";
      for (int64_t d : *v.shape)
        k << d << ",";
    }
  return k.str();
}

template <typename Build>
dnnl::primitive &cached(KernelContext &c, const std::string &key, Build build) {
  auto &prims = c.primitives.impl().prims;
  auto it = prims.find(key);
  if (it == prims.end())
    it = prims.emplace(key, build()).first;
  return it->second;
}

dnnl::memory mem(KernelContext &c, const dnnl::memory::desc &d, void *p) {
  return dnnl::memory(d, c.primitives.impl().engine, p);
}

/// Runs `p` on the context's stream with the context's scratchpad.
void run(KernelContext &c, const dnnl::primitive &p,
         std::unordered_map<int, dnnl::memory> args) {
  auto &impl = c.primitives.impl();
  const_dnnl_primitive_desc_t pd = nullptr;
  const dnnl_memory_desc_t *scratch = nullptr;
  if (dnnl_primitive_get_primitive_desc(p.get(), &pd) == dnnl_success)
    scratch = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  if (size_t bytes = scratch ? dnnl_memory_desc_get_size(scratch) : 0) {
    if (impl.scratch.size() < bytes)
      impl.scratch.resize(bytes);
    args[DNNL_ARG_SCRATCHPAD] = dnnl::memory(dnnl::memory::desc(*scratch),
                                             impl.engine, impl.scratch.data());
  }
  p.execute(impl.stream, args);
  impl.stream.wait();
}

/// A logical [..., R, C] operand stored row-major, possibly as [..., C, R]:
/// a transpose is a choice of strides, never a copy.
dnnl::memory::desc operandDesc(const Shape &stored, size_t rank,
                               bool transposed) {
  dnnl::memory::dims phys(rank - stored.size(), 1);
  phys.insert(phys.end(), stored.begin(), stored.end());
  dnnl::memory::dims st = stridesOf(phys);
  dnnl::memory::dims logical = phys;
  if (transposed) {
    std::swap(logical[rank - 1], logical[rank - 2]);
    std::swap(st[rank - 1], st[rank - 2]);
  }
  return dnnl::memory::desc(logical, dt::f32, st);
}

bool prepackEnabled() {
  static const bool enabled = [] {
    const char *v = std::getenv("KILN_PREPACK");
    return !v || std::string(v) != "0";
  }();
  return enabled;
}

/// True when an earlier call read this parameter at this version; records
/// this read otherwise. (Within one call a parameter may feed several
/// matmuls; only a second call shows that the weights stay fixed.)
bool seenBefore(PackedWeights::Impl::Param &param, uint64_t version,
                uint64_t run) {
  if (param.seen == version && param.seenInRun != run)
    return true;
  if (param.seen != version) {
    param.seen = version;
    param.seenInRun = run;
  }
  return false;
}

/// The matmul on a packed copy of its weight parameter, when PackedWeights'
/// rule says to use one (then `weights` becomes the copy); null otherwise.
template <typename Build>
dnnl::primitive *packedMatmul(KernelContext &c, const std::string &key,
                              bool reduceBatch, size_t weightRank,
                              const dnnl::memory::desc &plainDesc, Build build,
                              dnnl::memory &weights) {
  if (!prepackEnabled() || !c.packed || !c.paramVersions || reduceBatch ||
      weightRank != 2 || c.inParams.size() < 2 || c.inParams[1] < 0)
    return nullptr;
  auto &impl = c.packed->impl();
  std::lock_guard<std::mutex> lock(impl.mutex);
  int64_t index = c.inParams[1];
  uint64_t version = (*c.paramVersions)[index];
  auto &param = impl.params[index];
  auto layout = impl.layouts.find(key);
  if (layout == impl.layouts.end()) {
    if (!seenBefore(param, version, impl.run))
      return nullptr;
    dnnl::memory::desc any(plainDesc.dims(), dt::f32,
                           dnnl::memory::format_tag::any);
    auto pd = build(any);
    layout = impl.layouts.emplace(key, pd.weights_desc()).first;
    impl.prims.emplace(key, dnnl::matmul(pd));
  }
  const dnnl::memory::desc &want = layout->second;
  if (want == plainDesc)
    return nullptr; // oneDNN prefers the layout the weights already have
  PackedWeights::Impl::Copy *copy = nullptr;
  for (auto &k : param.copies) // a square weight read transposed and not
    if (k.source == plainDesc && k.desc == want) // has two copies
      copy = &k;
  if (!copy || copy->version != version) {
    if (!seenBefore(param, version, impl.run))
      return nullptr;
    if (!copy) {
      if (param.copies.size() >= 2)
        return nullptr;
      param.copies.push_back(
          {plainDesc, want, dnnl::memory(want, impl.engine), 0});
      copy = &param.copies.back();
    }
    dnnl::reorder pack(dnnl::reorder::primitive_desc(
        impl.engine, weights.get_desc(), impl.engine, copy->mem.get_desc(),
        userScratchpad()));
    run(c, pack, {{DNNL_ARG_FROM, weights}, {DNNL_ARG_TO, copy->mem}});
    copy->version = version;
  }
  weights = copy->mem;
  return &impl.prims.at(key);
}

/// Matmul and FusedMatmul as one oneDNN matmul. A rank-2 weight shared by
/// every batch (a linear layer) flattens the batch into rows, one large
/// GEMM instead of many; reduce_batch contracts over the flattened rows too.
/// The epilogue becomes post-ops, applied while the tile is in registers:
/// bias (the primitive's own argument), scale (eltwise_linear), the
/// activation (eltwise) and the residual (binary_add).
bool matmul(KernelContext &c) {
  const Shape &a = *c.in[0].shape, &b = *c.in[1].shape, &o = *c.out[0].shape;
  cpu::MatmulForm form = cpu::matmulForm(c.kernel);
  const kart::FusedMatmulAttrs *f = form.fused;
  bool fused = f != nullptr, ta = form.ta, tb = form.tb,
       reduceBatch = form.reduceBatch;
  const View *bias = fused && c.in[2].data ? &c.in[2] : nullptr;
  const View *residual = fused && c.in[3].data ? &c.in[3] : nullptr;
  float scale = f ? static_cast<float>(f->scale()) : 1.0f;
  kart::Activation act = f ? f->activation() : kart::Activation::None;

  Shape as = a, os = o;
  if (reduceBatch) {
    int64_t rows = c.in[0].numel() / a.back();
    as = {rows, a.back()};
  } else if (!ta && b.size() == 2 && a.size() > 2) {
    as = {c.in[0].numel() / a.back(), a.back()};
    os = {as[0], o.back()};
  }
  Shape bs = reduceBatch ? Shape{c.in[1].numel() / b.back(), b.back()} : b;
  size_t rank = os.size();
  auto src = operandDesc(as, rank, ta), wei = operandDesc(bs, rank, tb);
  dnnl::memory::dims od(os.begin(), os.end());
  dnnl::memory::desc dst(od, dt::f32, stridesOf(od));
  dnnl::memory::dims bd(rank, 1);
  bd.back() = os.back();
  dnnl::memory::desc biasDesc(bd, dt::f32, stridesOf(bd));
  auto build = [&](const dnnl::memory::desc &weights) {
    using A = dnnl::algorithm;
    dnnl::post_ops po;
    if (scale != 1.0f)
      po.append_eltwise(1.0f, A::eltwise_linear, scale, 0.0f);
    if (act == kart::Activation::Relu)
      po.append_eltwise(1.0f, A::eltwise_relu, 0.0f, 0.0f);
    else if (act == kart::Activation::Gelu)
      po.append_eltwise(1.0f, A::eltwise_gelu_erf, 0.0f, 0.0f);
    else if (act == kart::Activation::GeluTanh)
      po.append_eltwise(1.0f, A::eltwise_gelu_tanh, 0.0f, 0.0f);
    else if (act == kart::Activation::Silu)
      po.append_eltwise(1.0f, A::eltwise_swish, 1.0f, 0.0f);
    if (residual)
      po.append_binary(A::binary_add, dst);
    dnnl::primitive_attr attr = userScratchpad();
    attr.set_post_ops(po);
    auto desc = bias ? dnnl::matmul::desc(src, weights, biasDesc, dst)
                     : dnnl::matmul::desc(src, weights, dst);
    return dnnl::matmul::primitive_desc(desc, attr, c.primitives.impl().engine);
  };
  std::string key = keyOf(c, std::to_string(ta) + std::to_string(tb));
  dnnl::memory weights = mem(c, wei, c.in[1].data);
  dnnl::primitive *p =
      packedMatmul(c, key, reduceBatch, bs.size(), wei, build, weights);
  if (!p)
    p = &cached(c, key, [&] { return dnnl::matmul(build(wei)); });
  std::unordered_map<int, dnnl::memory> args = {
      {DNNL_ARG_SRC, mem(c, src, c.in[0].data)},
      {DNNL_ARG_WEIGHTS, weights},
      {DNNL_ARG_DST, mem(c, dst, c.out[0].data)}};
  if (bias)
    args[DNNL_ARG_BIAS] = mem(c, biasDesc, bias->data);
  if (residual) {
    int index = (scale != 1.0f) + (act != kart::Activation::None);
    args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(index) | DNNL_ARG_SRC_1] =
        mem(c, dst, residual->data);
  }
  run(c, *p, args);
  return true;
}

bool eltwise(KernelContext &c) {
  using A = dnnl::algorithm;
  A alg;
  float alpha = 0, beta = 0;
  switch (c.kernel.op()) {
  case Op::Neg:
    alg = A::eltwise_linear;
    alpha = -1;
    break;
  case Op::Exp:
    alg = A::eltwise_exp;
    break;
  case Op::Log:
    alg = A::eltwise_log;
    break;
  case Op::Sqrt:
    alg = A::eltwise_sqrt;
    break;
  case Op::Rsqrt:
    alg = A::eltwise_pow;
    alpha = 1;
    beta = -0.5f;
    break;
  case Op::Tanh:
    alg = A::eltwise_tanh;
    break;
  case Op::Sigmoid:
    alg = A::eltwise_logistic;
    break;
  case Op::Relu:
    alg = A::eltwise_relu;
    break;
  case Op::Silu:
    alg = A::eltwise_swish;
    alpha = 1;
    break;
  case Op::Gelu:
    alg = c.kernel.attrs_as_GeluAttrs()->approximation() ==
                  kart::GeluApproximation::Tanh
              ? A::eltwise_gelu_tanh
              : A::eltwise_gelu_erf;
    break;
  default:
    return false;
  }
  auto md = plain({c.in[0].numel()});
  auto &p = cached(c, keyOf(c), [&] {
    return dnnl::eltwise_forward(dnnl::eltwise_forward::primitive_desc(
        dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_inference, alg, md,
                                    alpha, beta),
        userScratchpad(), c.primitives.impl().engine));
  });
  run(c, p,
      {{DNNL_ARG_SRC, mem(c, md, c.in[0].data)},
       {DNNL_ARG_DST, mem(c, md, c.out[0].data)}});
  return true;
}

/// Gradients of activations: oneDNN's eltwise backward primitives.
bool activationGrad(KernelContext &c) {
  using A = dnnl::algorithm;
  A alg;
  float alpha = 0;
  switch (c.kernel.attrs_as_ActivationGradAttrs()->kind()) {
  case kart::Activation::Relu:
    alg = A::eltwise_relu;
    break;
  case kart::Activation::Gelu:
    alg = A::eltwise_gelu_erf;
    break;
  case kart::Activation::GeluTanh:
    alg = A::eltwise_gelu_tanh;
    break;
  case kart::Activation::Silu:
    alg = A::eltwise_swish;
    alpha = 1;
    break;
  default:
    return false;
  }
  auto md = plain({c.out[0].numel()});
  auto &p = cached(c, keyOf(c), [&] {
    auto &engine = c.primitives.impl().engine;
    auto hint = dnnl::eltwise_forward::primitive_desc(
        dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_training, alg, md,
                                    alpha, 0.f),
        engine);
    return dnnl::eltwise_backward(dnnl::eltwise_backward::primitive_desc(
        dnnl::eltwise_backward::desc(alg, md, md, alpha, 0.f), userScratchpad(),
        engine, hint));
  });
  run(c, p,
      {{DNNL_ARG_DIFF_DST, mem(c, md, c.in[0].data)},
       {DNNL_ARG_SRC, mem(c, md, c.in[1].data)},
       {DNNL_ARG_DIFF_SRC, mem(c, md, c.out[0].data)}});
  return true;
}

bool binary(KernelContext &c) {
  using A = dnnl::algorithm;
  if (c.in[0].dtype != DType::F32)
    return false;
  A alg;
  bool commutative = true;
  switch (c.kernel.op()) {
  case Op::Add:
    alg = A::binary_add;
    break;
  case Op::Mul:
    alg = A::binary_mul;
    break;
  case Op::Max:
    alg = A::binary_max;
    break;
  case Op::Min:
    alg = A::binary_min;
    break;
  case Op::Sub:
    alg = A::binary_sub;
    commutative = false;
    break;
  case Op::Div:
    alg = A::binary_div;
    commutative = false;
    break;
  default:
    return false;
  }
  const Shape &out = *c.out[0].shape;
  size_t rank = std::max<size_t>(out.size(), 1);
  Shape a = padTo(*c.in[0].shape, rank), b = padTo(*c.in[1].shape, rank),
        o = padTo(out, rank);
  int first = 0;
  // oneDNN broadcasts only its second source; swap when that is legal.
  if (a != o) {
    if (!commutative || b != o)
      return false;
    std::swap(a, b);
    first = 1;
  }
  auto ma = plain(a), mb = plain(b), mo = plain(o);
  auto &p = cached(c, keyOf(c, std::to_string(first)), [&] {
    return dnnl::binary(dnnl::binary::primitive_desc(
        dnnl::binary::desc(alg, ma, mb, mo), userScratchpad(),
        c.primitives.impl().engine));
  });
  run(c, p,
      {{DNNL_ARG_SRC_0, mem(c, ma, c.in[first].data)},
       {DNNL_ARG_SRC_1, mem(c, mb, c.in[1 - first].data)},
       {DNNL_ARG_DST, mem(c, mo, c.out[0].data)}});
  return true;
}

bool softmax(KernelContext &c) {
  const Shape &s = *c.in[0].shape;
  int64_t axis = c.kernel.attrs_as_AxisAttrs()->axis();
  axis = axis < 0 ? axis + static_cast<int64_t>(s.size()) : axis;
  auto md = plain(s);
  auto &p = cached(c, keyOf(c), [&] {
    return dnnl::softmax_forward(dnnl::softmax_forward::primitive_desc(
        dnnl::softmax_forward::desc(dnnl::prop_kind::forward_inference, md,
                                    static_cast<int>(axis)),
        userScratchpad(), c.primitives.impl().engine));
  });
  run(c, p,
      {{DNNL_ARG_SRC, mem(c, md, c.in[0].data)},
       {DNNL_ARG_DST, mem(c, md, c.out[0].data)}});
  return true;
}

bool layerNorm(KernelContext &c) {
  const Shape &s = *c.in[0].shape;
  int64_t C = s.back();
  // oneDNN normalizes over the last dimension of a [rows, C] view.
  auto md = plain({c.in[0].numel() / std::max<int64_t>(C, 1), C});
  auto wd = plain({C});
  float eps = static_cast<float>(c.kernel.attrs_as_NormAttrs()->eps());
  auto &p = cached(c, keyOf(c), [&] {
    return dnnl::layer_normalization_forward(
        dnnl::layer_normalization_forward::primitive_desc(
            dnnl::layer_normalization_forward::desc(
                dnnl::prop_kind::forward_inference, md, eps,
                dnnl::normalization_flags::use_scale |
                    dnnl::normalization_flags::use_shift),
            userScratchpad(), c.primitives.impl().engine));
  });
  run(c, p,
      {{DNNL_ARG_SRC, mem(c, md, c.in[0].data)},
       {DNNL_ARG_SCALE, mem(c, wd, c.in[1].data)},
       {DNNL_ARG_SHIFT, mem(c, wd, c.in[2].data)},
       {DNNL_ARG_DST, mem(c, md, c.out[0].data)}});
  return true;
}

bool reduction(KernelContext &c) {
  using A = dnnl::algorithm;
  const Shape &s = *c.in[0].shape;
  if (s.empty())
    return false;
  A alg = c.kernel.op() == Op::ReduceSum    ? A::reduction_sum
          : c.kernel.op() == Op::ReduceMean ? A::reduction_mean
                                            : A::reduction_max;
  const auto &axes = *c.kernel.attrs_as_ReduceAttrs()->axes();
  Shape kept = s;
  for (int64_t a : axes)
    kept[a < 0 ? a + static_cast<int64_t>(s.size()) : a] = 1;
  if (kept == s)
    return false; // nothing to reduce: oneDNN wants a real reduction
  // One contiguous block of reduced axes: kiln's blocked kernel is faster
  // than oneDNN 2.6's reduction there (4-10x on bias gradients), and
  // deterministic.
  int64_t first, last;
  if (reducedBlock(axes, s.size(), first, last))
    return false;
  // The result is contiguous either way; describe it with kept dimensions.
  auto ms = plain(s), md = plain(kept);
  auto &p = cached(c, keyOf(c), [&] {
    return dnnl::reduction(dnnl::reduction::primitive_desc(
        dnnl::reduction::desc(alg, ms, md, 0.f, 0.f), userScratchpad(),
        c.primitives.impl().engine));
  });
  run(c, p,
      {{DNNL_ARG_SRC, mem(c, ms, c.in[0].data)},
       {DNNL_ARG_DST, mem(c, md, c.out[0].data)}});
  return true;
}

bool transpose(KernelContext &c) {
  dt type;
  switch (c.in[0].dtype) {
  case DType::F32:
    type = dt::f32;
    break;
  case DType::I32:
    type = dt::s32;
    break;
  default:
    return false;
  }
  const Shape &in = *c.in[0].shape, &out = *c.out[0].shape;
  if (in.empty())
    return false;
  dnnl::memory::dims inStrides = stridesOf({in.begin(), in.end()});
  dnnl::memory::dims od(out.begin(), out.end()), st(out.size());
  for (size_t i = 0; i < out.size(); ++i)
    st[i] = inStrides[c.kernel.attrs_as_TransposeAttrs()->perm()->Get(i)];
  // The source seen through the permutation: output dims, permuted strides.
  dnnl::memory::desc src(od, type, st), dst(od, type, stridesOf(od));
  auto &p = cached(c, keyOf(c), [&] {
    return dnnl::reorder(dnnl::reorder::primitive_desc(
        c.primitives.impl().engine, src, c.primitives.impl().engine, dst,
        userScratchpad()));
  });
  run(c, p,
      {{DNNL_ARG_FROM, mem(c, src, c.in[0].data)},
       {DNNL_ARG_TO, mem(c, dst, c.out[0].data)}});
  return true;
}

} // namespace

namespace {
/// A primitive as a fast kernel: empty results are left to the reference
/// kernels, and oneDNN's errors become the kernel's status.
template <bool (*Primitive)(KernelContext &)>
bool guarded(KernelContext &c, Status &status) {
  if (c.out.empty() || c.out[0].numel() == 0)
    return false;
  try {
    return Primitive(c);
  } catch (const dnnl::error &e) {
    status = Status::error(std::string(kart::EnumNameOp(c.kernel.op())) +
                           ": oneDNN failed: " + e.what());
    return true;
  }
}
} // namespace

#define KILN_ONEDNN_KERNEL(Name, primitive)                                    \
  bool kiln::runtime::cpu::Name(KernelContext &c, Status &s) {                 \
    return guarded<::primitive>(c, s);                                         \
  }
KILN_ONEDNN_KERNEL(onednnMatmul, matmul)
KILN_ONEDNN_KERNEL(onednnEltwise, eltwise)
KILN_ONEDNN_KERNEL(onednnBinary, binary)
KILN_ONEDNN_KERNEL(onednnSoftmax, softmax)
KILN_ONEDNN_KERNEL(onednnLayerNorm, layerNorm)
KILN_ONEDNN_KERNEL(onednnReduction, reduction)
KILN_ONEDNN_KERNEL(onednnTranspose, transpose)
KILN_ONEDNN_KERNEL(onednnActivationGrad, activationGrad)
#undef KILN_ONEDNN_KERNEL
