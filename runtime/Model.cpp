//===- Model.cpp - verify, bind and run a .kart artifact ------------------===//
#include "runtime/Model.h"
#include "runtime/File.h"
#include "runtime/Kernels.h"
#include "runtime/Memory.h"
#include "runtime/Safetensors.h"

#include <flatbuffers/flatbuffers.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>

using namespace kiln;
using namespace kiln::runtime;
using kart::Op;

namespace {

using Shape = std::vector<int64_t>;

constexpr size_t kAlign = 64;
size_t alignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
/// The most one intermediate may take (1 TiB): far beyond any machine, small
/// enough that sums of a plan's values cannot overflow.
constexpr uint64_t kMaxValueBytes = uint64_t(1) << 40;

DType fromKart(kart::DType t) { return static_cast<DType>(t); }

bool computable(kart::DType t) {
  return t == kart::DType::F32 || t == kart::DType::I32 ||
         t == kart::DType::I64 || t == kart::DType::Bool ||
         t == kart::DType::F64;
}

std::string dimText(const kart::Dim *d, const kart::Program &p) {
  std::string s;
  if (d->factor() == 0)
    return "?";
  if (d->factor() != 1 || !d->symbols() || d->symbols()->size() == 0)
    s = std::to_string(d->factor());
  if (d->symbols())
    for (uint32_t i : *d->symbols())
      s += (s.empty() ? "" : "*") + p.symbols()->Get(i)->str();
  return s;
}

} // namespace

namespace kiln::runtime {

/// A function's verified tables plus the per-call workspace.
class FunctionState {
public:
  FunctionState(const kart::Program &p, const kart::Function &f,
                const std::vector<const uint8_t *> &params,
                OptimizerState &optimizer, std::vector<uint64_t> &versions,
                PackedWeights &packed)
      : prog(p), fn(f), paramData(params), optimizer(optimizer),
        paramVersion(versions), packed(packed) {}

  Status verify();
  Status bindInputs(const std::map<std::string, Tensor> &inputs);
  Status bindDims(const std::map<std::string, int64_t> &dims);
  Status planShapes();
  Status run(const std::map<std::string, Tensor> &inputs,
             std::vector<Tensor> &outputs, const RunOptions &options);
  MemoryReport memory();

  const kart::Program &prog;
  const kart::Function &fn;
  const std::vector<const uint8_t *> &paramData;
  OptimizerState &optimizer;
  std::vector<uint64_t> &paramVersion;
  PackedWeights &packed;

private:
  Status valueError(int id, const std::string &msg) const;
  Status checkKernel(size_t index, std::vector<bool> &written);
  int storageOf(int id) const; // the value whose arena bytes `id` uses

  std::vector<std::vector<uint8_t>> constants;
  std::vector<int64_t> symbols;
  std::vector<bool> bound;
  std::vector<Shape> shapes;
  std::vector<size_t> slotBytes;
  // Lifetimes of intermediates (first and last kernel touching them) and,
  // per binding of the symbols, their byte offsets in the arena.
  std::vector<int> defAt, lastUse;
  // A value that reuses the storage of the kernel input it replaces (a
  // reshape's result, the logits' gradient over the logits), or -1.
  std::vector<int> aliasOf;
  std::vector<size_t> offsets;
  std::vector<int64_t> plannedFor; // the symbols the offsets were planned for
  size_t arenaBytes = 0;
  void planOffsets();
  std::vector<uint8_t> arenaStorage;
  PrimitiveCache primitives;
};

/// The execution contexts of one function. A call borrows an idle one, or
/// makes a new one when every context is busy with another thread's call,
/// and gives it back afterwards: contexts are never shared by two calls.
struct StatePool {
  const kart::Program *program = nullptr;
  const kart::Function *function = nullptr;
  bool writesParameters = false; // has OptimizerUpdate kernels
  std::mutex mutex;
  std::vector<std::unique_ptr<FunctionState>> idle;
};

} // namespace kiln::runtime

namespace {
/// An execution context borrowed from a pool for one call.
class Borrowed {
public:
  explicit Borrowed(StatePool &pool) : pool_(pool) {
    std::lock_guard<std::mutex> lock(pool_.mutex);
    if (!pool_.idle.empty()) {
      state_ = std::move(pool_.idle.back());
      pool_.idle.pop_back();
    }
  }
  ~Borrowed() {
    if (!state_)
      return;
    std::lock_guard<std::mutex> lock(pool_.mutex);
    pool_.idle.push_back(std::move(state_));
  }
  Borrowed(const Borrowed &) = delete;
  Borrowed &operator=(const Borrowed &) = delete;

  /// The context, made and verified by `make` when none was idle.
  template <typename Make> Status get(Make make, FunctionState *&out) {
    if (!state_) {
      state_ = make();
      if (Status s = state_->verify(); !s) {
        state_.reset();
        return s;
      }
    }
    out = state_.get();
    return Status::ok();
  }

private:
  StatePool &pool_;
  std::unique_ptr<FunctionState> state_;
};
} // namespace

Status FunctionState::valueError(int id, const std::string &msg) const {
  return Status::error("function '" + fn.name()->str() + "', value " +
                       std::to_string(id) + ": " + msg);
}

Status FunctionState::checkKernel(size_t ki, std::vector<bool> &written) {
  const kart::Kernel *k = fn.kernels()->Get(ki);
  std::string where =
      "function '" + fn.name()->str() + "', kernel " + std::to_string(ki);
  auto bad = [&](const std::string &msg) {
    return Status::error(where + ": " + msg);
  };
  if (!k || !k->inputs() || !k->outputs())
    return bad("missing operand lists");
  if (k->op() < Op::MIN || k->op() > Op::MAX)
    return bad("unknown op code " + std::to_string(static_cast<int>(k->op())));
  where += " (" + std::string(kart::EnumNameOp(k->op())) + ")";
  const OpSignature &sig = signatureOf(k->op());
  int nin = k->inputs()->size(), nout = k->outputs()->size();
  if (nin < sig.minInputs || (sig.maxInputs >= 0 && nin > sig.maxInputs))
    return bad("has " + std::to_string(nin) + " inputs");
  if ((sig.outputs >= 0 && nout != sig.outputs) ||
      (nout < 1 && sig.outputs != 0))
    return bad("has " + std::to_string(nout) + " outputs");
  int nints = k->ints() ? k->ints()->size() : 0;
  int nfloats = k->floats() ? k->floats()->size() : 0;
  int ndims = k->dims() ? k->dims()->size() : 0;
  if ((sig.ints >= 0 && nints != sig.ints) || nints < sig.minInts)
    return bad("has " + std::to_string(nints) + " integer attributes");
  if (sig.floats >= 0 && nfloats != sig.floats)
    return bad("has " + std::to_string(nfloats) + " float attributes");
  if ((sig.dims >= 0 && ndims != sig.dims) || (sig.dims < 0 && ndims < 1))
    return bad("has " + std::to_string(ndims) + " dimension attributes");
  if (sig.text && !k->text())
    return bad("is missing its text attribute");
  for (int i = 0; i < ndims; ++i) {
    const kart::Dim *d = k->dims()->Get(i);
    if (!d || d->factor() <= 0)
      return bad("dimension attribute " + std::to_string(i) + " is invalid");
    if (d->symbols())
      for (uint32_t s : *d->symbols())
        if (s >= symbols.size())
          return bad("dimension attribute names symbol " + std::to_string(s));
  }
  int nvalues = fn.values()->size();
  auto value = [&](int id) { return fn.values()->Get(id); };
  std::vector<const kart::Value *> in, out;
  for (int i = 0; i < nin; ++i) {
    int id = k->inputs()->Get(i);
    bool optional = (k->op() == Op::Rope && i == 1) ||
                    (k->op() == Op::Attention && i >= 3) ||
                    (k->op() == Op::AttentionGrad && i >= 6) ||
                    (k->op() == Op::FusedMatmul && i >= 2) ||
                    (k->op() == Op::AddNorm && i == 3);
    if (id == -1 && optional) {
      in.push_back(nullptr);
      continue;
    }
    if (id < 0 || id >= nvalues)
      return bad("input " + std::to_string(i) + " names value " +
                 std::to_string(id) + " of " + std::to_string(nvalues));
    if (!written[id])
      return bad("reads value " + std::to_string(id) +
                 " before any kernel writes it");
    in.push_back(value(id));
  }
  for (int i = 0; i < nout; ++i) {
    int id = k->outputs()->Get(i);
    if (id < 0 || id >= nvalues)
      return bad("output " + std::to_string(i) + " names value " +
                 std::to_string(id) + " of " + std::to_string(nvalues));
    if (value(id)->kind() != kart::ValueKind::Intermediate)
      return bad("writes value " + std::to_string(id) +
                 ", which is not an intermediate");
    if (written[id])
      return bad("writes value " + std::to_string(id) + " a second time");
    written[id] = true;
    out.push_back(value(id));
  }
  // Ranks and element types are static: check what kernels rely on.
  auto rank = [](const kart::Value *v) {
    return static_cast<int64_t>(v->shape()->size());
  };
  auto isF32 = [](const kart::Value *v) {
    return v->dtype() == kart::DType::F32;
  };
  auto isInt = [](const kart::Value *v) {
    return v->dtype() == kart::DType::I32 || v->dtype() == kart::DType::I64;
  };
  auto axisOk = [](int64_t axis, int64_t r) { return axis >= -r && axis < r; };
  const kart::Kernel &kk = *k;
  auto ival = [&](int i) { return kk.ints()->Get(i); };
  if (isBinary(k->op()) &&
      (in[0]->dtype() != in[1]->dtype() || out[0]->dtype() != in[0]->dtype() ||
       !(isF32(in[0]) || isInt(in[0]))))
    return bad("needs operands and result of one type (f32, i32 or i64)");
  if (isUnary(k->op()) && (!isF32(in[0]) || !isF32(out[0])))
    return bad("needs f32 operands");
  switch (k->op()) {
  case Op::Embedding:
    if (rank(in[0]) != 2 || !isF32(in[0]) || !isInt(in[1]) || !isF32(out[0]))
      return bad("needs an f32 [V, D] table, integer ids and an f32 result");
    break;
  case Op::Matmul:
    if (rank(in[0]) < 2 || rank(in[1]) < 2 || !isF32(in[0]) || !isF32(in[1]) ||
        !isF32(out[0]))
      return bad("needs f32 operands of rank >= 2");
    break;
  case Op::Cast:
    break;
  case Op::Reshape:
  case Op::Dropout:
    if (out[0]->dtype() != in[0]->dtype())
      return bad("changes the element type");
    break;
  case Op::Transpose: {
    std::set<int64_t> seen;
    for (int i = 0; i < nints; ++i)
      if (ival(i) < 0 || ival(i) >= rank(in[0]) || !seen.insert(ival(i)).second)
        return bad("perm is not a permutation of the input's dimensions");
    if (nints != rank(in[0]) || out[0]->dtype() != in[0]->dtype())
      return bad("perm does not match the input");
    break;
  }
  case Op::Slice:
    if (!axisOk(ival(0), rank(in[0])) || ival(1) < 0 ||
        out[0]->dtype() != in[0]->dtype())
      return bad("axis or start is out of range");
    break;
  case Op::Concat:
  case Op::Split:
    for (const kart::Value *v : k->op() == Op::Concat ? in : out)
      if (rank(v) != rank(k->op() == Op::Concat ? out[0] : in[0]) ||
          v->dtype() != (k->op() == Op::Concat ? out[0] : in[0])->dtype())
        return bad("operands differ in rank or element type");
    if (!axisOk(ival(0), rank(in[0])))
      return bad("axis is out of range");
    break;
  case Op::ReduceSum:
  case Op::ReduceMean:
  case Op::ReduceMax:
    for (int i = 1; i < nints; ++i)
      if (!axisOk(ival(i), rank(in[0])))
        return bad("axis is out of range");
    if (!isF32(in[0]) || !isF32(out[0]))
      return bad("needs f32 operands");
    break;
  case Op::Softmax:
    if (!axisOk(ival(0), rank(in[0])) || !isF32(in[0]) || !isF32(out[0]))
      return bad("needs f32 operands and an axis in range");
    break;
  case Op::LayerNorm:
  case Op::RMSNorm:
    for (size_t i = 1; i < in.size(); ++i)
      if (rank(in[i]) != 1 || !isF32(in[i]))
        return bad("weight and bias must be f32 vectors");
    if (rank(in[0]) < 1 || !isF32(in[0]) || !isF32(out[0]))
      return bad("needs an f32 input of rank >= 1");
    break;
  case Op::Rope:
    if (nints > 2)
      return bad("has " + std::to_string(nints) + " integer attributes");
    if (rank(in[0]) != 3 || !isF32(in[0]) || !isF32(out[0]) || ival(0) <= 0 ||
        ival(0) % 2 ||
        (in[1] && (!isInt(in[1]) || rank(in[1]) < 1 || rank(in[1]) > 2)))
      return bad("needs f32 [B, T, C], an even head_dim and [T] or [B, T] "
                 "integer positions");
    break;
  case Op::Attention:
    for (int i = 0; i < 3; ++i)
      if (rank(in[i]) != 3 || !isF32(in[i]))
        return bad("q, k and v must be f32 [B, T, C]");
    if (ival(0) <= 0 || ival(1) <= 0 || ival(0) % ival(1) || !isF32(out[0]))
      return bad("head counts are invalid");
    if (in[3] && (rank(in[3]) != 2 || in[3]->dtype() == kart::DType::F16 ||
                  in[3]->dtype() == kart::DType::BF16))
      return bad("mask must be a [B, Tk] tensor");
    if (in[4] && ((rank(in[4]) != 3 && rank(in[4]) != 4) || !isF32(in[4])))
      return bad("bias must be an f32 tensor of rank 3 or 4");
    if (nout > 2 || (nout == 2 && (rank(out[1]) != 3 || !isF32(out[1]))))
      return bad("has outputs other than the result and an f32 lse");
    break;
  case Op::GlobalNorm:
    for (const kart::Value *v : in)
      if (!isF32(v))
        return bad("needs f32 operands");
    if (!isF32(out[0]) || rank(out[0]) != 0)
      return bad("needs a scalar f32 result");
    break;
  case Op::OptimizerUpdate: {
    std::string kind = k->text()->str();
    if (kind != "adamw" && kind != "sgd")
      return bad("has an unknown optimizer '" + kind + "'");
    if (in[0]->kind() != kart::ValueKind::Parameter)
      return bad("must update a parameter");
    if (!isF32(in[0]) || !isF32(in[1]) || rank(in[0]) != rank(in[1]))
      return bad("needs an f32 parameter and a gradient of its shape");
    for (int i = 2; i < 5; ++i)
      if (!isF32(in[i]) || rank(in[i]) != 0)
        return bad("grad_norm, lr and step must be scalar f32 values");
    break;
  }
  case Op::EmbeddingGrad:
    if (rank(in[0]) != rank(in[1]) + 1 || !isF32(in[0]) || !isInt(in[1]) ||
        rank(out[0]) != 2 || !isF32(out[0]) || ival(0) <= 0)
      return bad("needs an f32 gradient, integer ids and an f32 [V, D] "
                 "result");
    break;
  case Op::ActivationGrad: {
    std::string kind = k->text()->str();
    if (kind != "relu" && kind != "gelu" && kind != "gelu_tanh" &&
        kind != "silu")
      return bad("has an unknown activation '" + kind + "'");
    if (!isF32(in[0]) || !isF32(in[1]) || !isF32(out[0]))
      return bad("needs f32 operands");
    break;
  }
  case Op::ZerosLike:
  case Op::ReshapeLike:
    if (out[0]->dtype() != in.back()->dtype() ||
        in[0]->dtype() != out[0]->dtype())
      return bad("changes the element type");
    break;
  case Op::SliceGrad:
    if (!axisOk(ival(0), rank(in[1])) || ival(1) < 0 ||
        rank(in[0]) != rank(in[1]) || in[0]->dtype() != in[1]->dtype() ||
        out[0]->dtype() != in[1]->dtype())
      return bad("axis, start or operand types are invalid");
    break;
  case Op::ReduceGrad: {
    std::string kind = k->text()->str();
    if (kind != "sum" && kind != "mean" && kind != "max")
      return bad("has an unknown reduction '" + kind + "'");
    for (int i = 1; i < nints; ++i)
      if (!axisOk(ival(i), rank(in[1])))
        return bad("axis is out of range");
    if (!isF32(in[0]) || !isF32(in[1]) || !isF32(out[0]))
      return bad("needs f32 operands");
    break;
  }
  case Op::ConcatGrad:
    if (nout != nin - 1 || !axisOk(ival(0), rank(in[0])))
      return bad("needs one output per input piece and an axis in range");
    for (int i = 1; i < nin; ++i)
      if (rank(in[i]) != rank(in[0]) || in[i]->dtype() != in[0]->dtype() ||
          out[i - 1]->dtype() != in[0]->dtype())
        return bad("operands differ in rank or element type");
    break;
  case Op::AttentionGrad:
    for (int i = 0; i < 5; ++i)
      if (rank(in[i]) != 3 || !isF32(in[i]))
        return bad("gradient, q, k, v and output must be f32 [B, T, C]");
    if (rank(in[5]) != 3 || !isF32(in[5]))
      return bad("lse must be f32 [B, H, Tq]");
    if (ival(0) <= 0 || ival(1) <= 0 || ival(0) % ival(1))
      return bad("head counts are invalid");
    if (in[6] && (rank(in[6]) != 2 || in[6]->dtype() == kart::DType::F16 ||
                  in[6]->dtype() == kart::DType::BF16))
      return bad("mask must be a [B, Tk] tensor");
    if (in[7] && ((rank(in[7]) != 3 && rank(in[7]) != 4) || !isF32(in[7])))
      return bad("bias must be an f32 tensor of rank 3 or 4");
    if (nout != (in[7] ? 4 : 3))
      return bad("needs a gradient for q, k, v and, with a bias, the bias");
    for (const kart::Value *v : out)
      if (!isF32(v))
        return bad("gradients must be f32");
    break;
  case Op::RelativePositionBucket:
    if (rank(in[0]) < 2 || rank(in[1]) < 2 || ival(1) < 4 || ival(2) < 2 ||
        out[0]->dtype() != kart::DType::I32)
      return bad("needs rank >= 2 operands, valid bucket counts and an i32 "
                 "result");
    break;
  case Op::CrossEntropy:
    if (rank(in[0]) < 1 || !isF32(in[0]) || !isInt(in[1]) ||
        rank(in[1]) != rank(in[0]) - 1 || !isF32(out[0]) || rank(out[0]) != 0)
      return bad("needs f32 logits, integer targets and a scalar f32 result");
    break;
  case Op::CrossEntropyGrad:
    if (rank(in[0]) < 1 || !isF32(in[0]) || !isInt(in[1]) ||
        rank(in[1]) != rank(in[0]) - 1 || !isF32(in[2]) || rank(in[2]) != 0 ||
        !isF32(out[0]) || rank(out[0]) != rank(in[0]))
      return bad("needs f32 logits, integer targets, a scalar f32 upstream "
                 "gradient and an f32 result shaped like the logits");
    break;
  case Op::FusedMatmul:
  case Op::AddNorm:
  case Op::NormGrad:
  case Op::SoftmaxCrossEntropy:
  case Op::FusedElementwise: {
    std::vector<FusedOperand> ins, outs;
    for (const kart::Value *v : in)
      ins.push_back(v ? FusedOperand{true, isF32(v), isInt(v), rank(v)}
                      : FusedOperand{});
    for (const kart::Value *v : out)
      outs.push_back({true, isF32(v), isInt(v), rank(v)});
    if (std::string why = checkFusedKernel(*k, ins, outs); !why.empty())
      return bad(why);
    break;
  }
  default:
    break;
  }
  return Status::ok();
}

Status FunctionState::verify() {
  std::string name = fn.name() ? fn.name()->str() : "";
  if (name.empty() || !fn.values() || !fn.kernels() || !fn.inputs() ||
      !fn.outputs() || !fn.input_names() ||
      fn.input_names()->size() != fn.inputs()->size())
    return Status::error("function '" + name + "' is missing tables");
  size_t nsym = prog.symbols() ? prog.symbols()->size() : 0;
  symbols.assign(nsym, 0);
  int nvalues = fn.values()->size();
  // Each arena slot holds at least one of the function's values: a larger
  // count is damage, and must not decide an allocation.
  if (fn.num_slots() < 0 || fn.num_slots() > nvalues)
    return Status::error("function '" + name + "' declares " +
                         std::to_string(fn.num_slots()) +
                         " arena slots for " + std::to_string(nvalues) +
                         " values; the artifact is damaged");
  size_t nconst = fn.constants() ? fn.constants()->size() : 0;
  for (size_t c = 0; c < nconst; ++c) {
    const kart::Constant *k = fn.constants()->Get(c);
    if (!k->shape() || !k->data() || !computable(k->dtype()))
      return Status::error("function '" + name + "', constant " +
                           std::to_string(c) + " is malformed");
    int64_t n = 1;
    for (int64_t d : *k->shape())
      if (d < 0 || d > (int64_t(1) << 40) || (n *= d) > (int64_t(1) << 40))
        return Status::error("function '" + name + "', constant " +
                             std::to_string(c) + " has an invalid shape");
    if (static_cast<size_t>(n) * dtypeSize(fromKart(k->dtype())) !=
        k->data()->size())
      return Status::error("function '" + name + "', constant " +
                           std::to_string(c) + " holds " +
                           std::to_string(k->data()->size()) +
                           " bytes, not what its shape needs");
    constants.emplace_back(k->data()->begin(), k->data()->end());
  }
  std::vector<bool> written(nvalues, false);
  for (int id = 0; id < nvalues; ++id) {
    const kart::Value *v = fn.values()->Get(id);
    if (!v || !v->shape())
      return valueError(id, "is malformed");
    if (!computable(v->dtype()))
      return valueError(id, std::string("has element type ") +
                                dtypeName(fromKart(v->dtype())) +
                                ", which the CPU runtime does not compute in");
    for (const kart::Dim *d : *v->shape()) {
      if (!d || d->factor() < 0 ||
          (d->factor() == 0 && (v->kind() != kart::ValueKind::Intermediate ||
                                (d->symbols() && d->symbols()->size()))))
        return valueError(id, "has an invalid dimension");
      if (d->symbols())
        for (uint32_t s : *d->symbols())
          if (s >= nsym)
            return valueError(id, "names symbolic dimension " +
                                      std::to_string(s) + " of " +
                                      std::to_string(nsym));
    }
    int idx = v->index();
    switch (v->kind()) {
    case kart::ValueKind::Input:
      if (idx < 0 || idx >= static_cast<int>(fn.inputs()->size()) ||
          fn.inputs()->Get(idx) != id)
        return valueError(id, "is an input with a wrong index");
      written[id] = true;
      break;
    case kart::ValueKind::Parameter: {
      if (idx < 0 || !prog.parameters() ||
          idx >= static_cast<int>(prog.parameters()->size()))
        return valueError(id, "names parameter " + std::to_string(idx) +
                                  ", which does not exist");
      const kart::Parameter *p = prog.parameters()->Get(idx);
      bool same =
          p->dtype() == v->dtype() && p->shape()->size() == v->shape()->size();
      for (size_t d = 0; same && d < p->shape()->size(); ++d)
        same = v->shape()->Get(d)->symbols() == nullptr
                   ? p->shape()->Get(d) == v->shape()->Get(d)->factor()
                   : v->shape()->Get(d)->symbols()->size() == 0 &&
                         p->shape()->Get(d) == v->shape()->Get(d)->factor();
      if (!same)
        return valueError(id, "does not match the type of parameter '" +
                                  p->name()->str() + "'");
      written[id] = true;
      break;
    }
    case kart::ValueKind::Constant: {
      if (idx < 0 || static_cast<size_t>(idx) >= nconst)
        return valueError(id, "names a constant that does not exist");
      const kart::Constant *k = fn.constants()->Get(idx);
      bool same =
          k->dtype() == v->dtype() && k->shape()->size() == v->shape()->size();
      for (size_t d = 0; same && d < k->shape()->size(); ++d)
        same = k->shape()->Get(d) == v->shape()->Get(d)->factor() &&
               (!v->shape()->Get(d)->symbols() ||
                v->shape()->Get(d)->symbols()->size() == 0);
      if (!same)
        return valueError(id, "does not match its constant's type");
      written[id] = true;
      break;
    }
    case kart::ValueKind::Intermediate:
      if (v->slot() < 0 || v->slot() >= fn.num_slots())
        return valueError(id, "uses arena slot " + std::to_string(v->slot()) +
                                  " of " + std::to_string(fn.num_slots()));
      break;
    default:
      return valueError(id, "has an unknown kind");
    }
  }
  for (size_t i = 0; i < fn.inputs()->size(); ++i) {
    int id = fn.inputs()->Get(i);
    if (id < 0 || id >= nvalues ||
        fn.values()->Get(id)->kind() != kart::ValueKind::Input)
      return Status::error("function '" + name + "', input " +
                           std::to_string(i) + " is not an input value");
  }
  for (size_t k = 0; k < fn.kernels()->size(); ++k)
    if (Status s = checkKernel(k, written); !s)
      return s;
  for (size_t i = 0; i < fn.outputs()->size(); ++i) {
    int id = fn.outputs()->Get(i);
    if (id < 0 || id >= nvalues || !written[id])
      return Status::error("function '" + name + "', output " +
                           std::to_string(i) + " is never computed");
  }
  shapes.resize(nvalues);
  slotBytes.resize(fn.num_slots());
  // Lifetimes: an intermediate lives from the kernel that writes it to the
  // last kernel that reads it (function outputs to the end).
  int nk = static_cast<int>(fn.kernels()->size());
  defAt.assign(nvalues, -1);
  lastUse.assign(nvalues, -1);
  for (int k = 0; k < nk; ++k) {
    const kart::Kernel *kk = fn.kernels()->Get(k);
    for (int id : *kk->outputs()) {
      defAt[id] = k;
      lastUse[id] = std::max(lastUse[id], k);
    }
    for (int id : *kk->inputs())
      if (id >= 0)
        lastUse[id] = k;
  }
  for (int id : *fn.outputs())
    lastUse[id] = nk;
  // In place: a result may take over an intermediate input that no later
  // kernel reads (and that is not a function output). The group then lives
  // from the first definition to the last use of any member.
  aliasOf.assign(nvalues, -1);
  for (int k = 0; k < nk; ++k) {
    const kart::Kernel *kk = fn.kernels()->Get(k);
    const OpSignature &sig = signatureOf(kk->op());
    if (sig.inPlaceInput < 0)
      continue;
    int in = kk->inputs()->Get(sig.inPlaceInput);
    int out = kk->outputs()->Get(sig.inPlaceOutput);
    if (fn.values()->Get(in)->kind() == kart::ValueKind::Intermediate &&
        fn.values()->Get(in)->dtype() == fn.values()->Get(out)->dtype() &&
        lastUse[in] == k)
      aliasOf[out] = in;
  }
  return Status::ok();
}

int FunctionState::storageOf(int id) const {
  while (aliasOf[id] >= 0)
    id = aliasOf[id];
  return id;
}

/// Places every intermediate in the arena for the current sizes: largest
/// first, each at the lowest offset free for its whole lifetime (greedy
/// best-fit by offset, as TFLite's arena planner). Values whose lifetimes
/// overlap never share bytes, so a kernel never writes over what it reads.
void FunctionState::planOffsets() {
  if (!offsets.empty() && plannedFor == symbols)
    return;
  int nvalues = fn.values()->size();
  // Each storage group (a value and the results aliasing it) is placed
  // once, with the largest member's size and the union of the lifetimes.
  std::vector<size_t> bytes(nvalues, 0);
  std::vector<int> first(nvalues, -1), last(nvalues, -1), order;
  for (int id = 0; id < nvalues; ++id) {
    if (fn.values()->Get(id)->kind() != kart::ValueKind::Intermediate)
      continue;
    size_t b = dtypeSize(fromKart(fn.values()->Get(id)->dtype()));
    for (int64_t d : shapes[id])
      b *= static_cast<size_t>(d);
    int root = storageOf(id);
    bytes[root] = std::max(bytes[root], alignUp(std::max<size_t>(b, 1)));
    first[root] =
        first[root] < 0 ? defAt[id] : std::min(first[root], defAt[id]);
    last[root] = std::max(last[root], lastUse[id]);
    if (root == id)
      order.push_back(id);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return bytes[a] > bytes[b]; });
  offsets.assign(nvalues, 0);
  arenaBytes = 0;
  std::vector<int> placed;
  std::vector<std::pair<size_t, size_t>> busy; // [offset, end) in the way
  for (int id : order) {
    busy.clear();
    for (int other : placed)
      if (first[other] <= last[id] && first[id] <= last[other])
        busy.push_back({offsets[other], offsets[other] + bytes[other]});
    std::sort(busy.begin(), busy.end());
    size_t at = 0;
    for (const auto &[lo, hi] : busy) {
      if (lo >= at + bytes[id])
        break;
      at = std::max(at, hi);
    }
    offsets[id] = at;
    arenaBytes = std::max(arenaBytes, at + bytes[id]);
    placed.push_back(id);
  }
  for (int id = 0; id < nvalues; ++id)
    if (fn.values()->Get(id)->kind() == kart::ValueKind::Intermediate)
      offsets[id] = offsets[storageOf(id)];
  plannedFor = symbols;
}

Status FunctionState::bindInputs(const std::map<std::string, Tensor> &inputs) {
  std::fill(bound.begin(), bound.end(), false);
  bound.assign(symbols.size(), false);
  std::string names;
  for (size_t i = 0; i < fn.inputs()->size(); ++i)
    names += (i ? ", " : "") + fn.input_names()->Get(i)->str();
  for (const auto &[name, t] : inputs) {
    bool known = false;
    for (size_t i = 0; i < fn.input_names()->size(); ++i)
      known |= fn.input_names()->Get(i)->str() == name;
    if (!known)
      return Status::error("'" + fn.name()->str() + "' has no input '" + name +
                           "'; its inputs are: " + names);
  }
  // First pass binds single-symbol dimensions; the second checks the rest.
  for (int pass = 0; pass < 2; ++pass)
    for (size_t i = 0; i < fn.inputs()->size(); ++i) {
      std::string name = fn.input_names()->Get(i)->str();
      auto it = inputs.find(name);
      if (it == inputs.end())
        return Status::error("missing input '" + name + "' for '" +
                             fn.name()->str() + "' (its inputs are: " + names +
                             ")");
      const Tensor &t = it->second;
      const kart::Value *v = fn.values()->Get(fn.inputs()->Get(i));
      std::string want = dtypeName(fromKart(v->dtype()));
      std::vector<std::string> dims;
      for (const kart::Dim *d : *v->shape())
        dims.push_back(dimText(d, prog));
      std::string wantShape = want + "[";
      for (size_t d = 0; d < dims.size(); ++d)
        wantShape += (d ? ", " : "") + dims[d];
      wantShape += "]";
      if (t.dtype() != fromKart(v->dtype()) ||
          t.rank() != static_cast<int64_t>(v->shape()->size()))
        return Status::error("input '" + name + "' is " + t.describe() +
                             ", expected " + wantShape);
      for (size_t d = 0; d < v->shape()->size(); ++d) {
        const kart::Dim *dim = v->shape()->Get(d);
        int64_t actual = t.shape()[d];
        bool single =
            dim->symbols() && dim->symbols()->size() == 1 && dim->factor() == 1;
        if (pass == 0 && single && !bound[dim->symbols()->Get(0)]) {
          if (actual < 1)
            return Status::error("input '" + name + "' has size " +
                                 std::to_string(actual) + " in dimension " +
                                 std::to_string(d) + " (" + dims[d] +
                                 "); sizes must be positive");
          symbols[dim->symbols()->Get(0)] = actual;
          bound[dim->symbols()->Get(0)] = true;
          continue;
        }
        if (pass == 0)
          continue;
        if (evalDim(dim, symbols) != actual)
          return Status::error("input '" + name + "' is " + t.describe() +
                               ", expected " + wantShape + " with " + dims[d] +
                               " = " + std::to_string(evalDim(dim, symbols)) +
                               " (from the inputs)");
      }
    }
  for (size_t i = 0; i < fn.inputs()->size(); ++i)
    shapes[fn.inputs()->Get(i)] =
        inputs.at(fn.input_names()->Get(i)->str()).shape();
  return Status::ok();
}

Status FunctionState::bindDims(const std::map<std::string, int64_t> &dims) {
  bound.assign(symbols.size(), false);
  for (size_t s = 0; s < symbols.size(); ++s) {
    auto it = dims.find(prog.symbols()->Get(s)->str());
    if (it != dims.end() && it->second > 0) {
      symbols[s] = it->second;
      bound[s] = true;
    }
  }
  for (size_t i = 0; i < fn.inputs()->size(); ++i) {
    int id = fn.inputs()->Get(i);
    Shape s;
    for (const kart::Dim *d : *fn.values()->Get(id)->shape()) {
      if (d->symbols())
        for (uint32_t sym : *d->symbols())
          if (!bound[sym])
            return Status::error("give a positive size for dimension '" +
                                 prog.symbols()->Get(sym)->str() + "'");
      s.push_back(evalDim(d, symbols));
    }
    shapes[id] = s;
  }
  return Status::ok();
}

Status FunctionState::planShapes() {
  int nvalues = fn.values()->size();
  for (int id = 0; id < nvalues; ++id) {
    const kart::Value *v = fn.values()->Get(id);
    if (v->kind() == kart::ValueKind::Parameter) {
      const auto *p = prog.parameters()->Get(v->index());
      shapes[id].assign(p->shape()->begin(), p->shape()->end());
    } else if (v->kind() == kart::ValueKind::Constant) {
      const auto *c = fn.constants()->Get(v->index());
      shapes[id].assign(c->shape()->begin(), c->shape()->end());
    }
  }
  std::fill(slotBytes.begin(), slotBytes.end(), 0);
  std::vector<const Shape *> in;
  std::vector<Shape> out;
  for (const kart::Kernel *k : *fn.kernels()) {
    in.clear();
    for (int id : *k->inputs())
      in.push_back(id < 0 ? nullptr : &shapes[id]);
    if (Status s = inferShapes(*k, in, symbols, out); !s)
      return s;
    for (size_t i = 0; i < out.size(); ++i) {
      int id = k->outputs()->Get(i);
      const kart::Value *v = fn.values()->Get(id);
      bool same = out[i].size() == v->shape()->size();
      for (size_t d = 0; same && d < out[i].size(); ++d)
        same = v->shape()->Get(d)->factor() == 0 ||
               out[i][d] == evalDim(v->shape()->Get(d), symbols);
      if (!same)
        return Status::error(
            (k->location() ? k->location()->str() + ": " : std::string()) +
            kart::EnumNameOp(k->op()) + " computes " +
            shapeString(fromKart(v->dtype()), out[i]) +
            ", but the plan expects another shape for value " +
            std::to_string(id));
      shapes[id] = out[i];
      // Sizes follow the inputs' shapes: bounded here, before any product
      // can wrap around.
      uint64_t bytes = dtypeSize(fromKart(v->dtype()));
      for (int64_t d : out[i])
        if (!multiplyWithin(bytes, static_cast<uint64_t>(d), kMaxValueBytes,
                            bytes))
          return Status::error(
              (k->location() ? k->location()->str() + ": " : std::string()) +
              kart::EnumNameOp(k->op()) + " computes " +
              shapeString(fromKart(v->dtype()), out[i]) +
              ", more than kiln allocates for one value (" +
              formatBytes(kMaxValueBytes) + "); use smaller inputs");
      slotBytes[v->slot()] = std::max(slotBytes[v->slot()], alignUp(bytes));
    }
  }
  return Status::ok();
}

MemoryReport FunctionState::memory() {
  MemoryReport r;
  planOffsets();
  r.arenaBytes = arenaBytes;
  for (size_t id = 0; id < shapes.size(); ++id) {
    const kart::Value *v = fn.values()->Get(id);
    if (v->kind() != kart::ValueKind::Intermediate)
      continue;
    size_t bytes = dtypeSize(fromKart(v->dtype()));
    for (int64_t d : shapes[id])
      bytes *= static_cast<size_t>(d);
    r.intermediateBytes += alignUp(bytes);
  }
  return r;
}

Status FunctionState::run(const std::map<std::string, Tensor> &inputs,
                          std::vector<Tensor> &outputs,
                          const RunOptions &options) {
  if (Status s = bindInputs(inputs); !s)
    return s;
  if (Status s = planShapes(); !s)
    return s;
  planOffsets();
  size_t total = arenaBytes;
  if (arenaStorage.size() < total + kAlign)
    if (uint64_t memory = physicalMemory(); memory && total > memory)
      return Status::error(
          "this call needs " + formatBytes(total) +
          " for its intermediates at these input shapes, more than this "
          "machine's " +
          formatBytes(memory) +
          " of memory; use smaller inputs (batch, "
          "sequence length)");
  if (arenaStorage.size() < total + kAlign)
    arenaStorage.assign(total + kAlign, 0);
  uint8_t *arena = reinterpret_cast<uint8_t *>(
      alignUp(reinterpret_cast<uintptr_t>(arenaStorage.data())));

  int nvalues = fn.values()->size();
  std::vector<void *> ptr(nvalues, nullptr);
  for (int id = 0; id < nvalues; ++id) {
    const kart::Value *v = fn.values()->Get(id);
    switch (v->kind()) {
    case kart::ValueKind::Input:
      ptr[id] = const_cast<void *>(
          inputs.at(fn.input_names()->Get(v->index())->str()).data());
      break;
    case kart::ValueKind::Parameter:
      ptr[id] = const_cast<uint8_t *>(paramData[v->index()]);
      break;
    case kart::ValueKind::Constant:
      ptr[id] = constants[v->index()].data();
      break;
    default:
      ptr[id] = arena + offsets[id];
    }
  }
  packed.beginRun();
  static const bool profile = [] {
    const char *e = std::getenv("KILN_PROFILE");
    return e && *e && std::string(e) != "0";
  }();
  std::map<std::string, double> opTime;
  for (const kart::Kernel *k : *fn.kernels()) {
    KernelContext ctx{*k, {}, {}, symbols, primitives};
    ctx.training = options.training;
    ctx.seed = options.seed;
    if (k->op() == kart::Op::OptimizerUpdate) {
      ctx.optimizer = &optimizer;
      ctx.paramIndex = fn.values()->Get(k->inputs()->Get(0))->index();
      ++paramVersion[ctx.paramIndex];
    }
    ctx.paramVersions = &paramVersion;
    ctx.packed = &packed;
    for (int id : *k->inputs())
      ctx.inParams.push_back(id >= 0 && fn.values()->Get(id)->kind() ==
                                            kart::ValueKind::Parameter
                                 ? fn.values()->Get(id)->index()
                                 : -1);
    for (int id : *k->inputs())
      ctx.in.push_back(id < 0 ? View{}
                              : View{ptr[id],
                                     fromKart(fn.values()->Get(id)->dtype()),
                                     &shapes[id]});
    for (int id : *k->outputs())
      ctx.out.push_back(
          View{ptr[id], fromKart(fn.values()->Get(id)->dtype()), &shapes[id]});
    auto t0 = profile ? std::chrono::steady_clock::now()
                      : std::chrono::steady_clock::time_point();
    if (Status s = execute(ctx); !s)
      return s;
    if (profile)
      opTime[kart::EnumNameOp(k->op())] +=
          std::chrono::duration<double, std::milli>(
              std::chrono::steady_clock::now() - t0)
              .count();
  }
  if (profile) {
    // KILN_PROFILE=1: milliseconds per op kind for this call, slowest first.
    std::vector<std::pair<double, std::string>> rows;
    double total = 0;
    for (const auto &[op, ms] : opTime) {
      rows.push_back({ms, op});
      total += ms;
    }
    std::sort(rows.rbegin(), rows.rend());
    std::fprintf(stderr, "kiln profile: %s: %.2f ms in kernels\n",
                 fn.name()->c_str(), total);
    for (const auto &[ms, op] : rows)
      std::fprintf(stderr, "  %-24s %9.2f ms  %5.1f%%\n", op.c_str(), ms,
                   100.0 * ms / std::max(total, 1e-9));
  }
  // Outputs that already have the right type and shape (a caller running
  // the same function again, like the trainer) are refilled in place.
  size_t nout = fn.outputs()->size();
  outputs.resize(nout);
  for (size_t i = 0; i < nout; ++i) {
    int id = fn.outputs()->Get(i);
    DType dt = fromKart(fn.values()->Get(id)->dtype());
    if (outputs[i].dtype() != dt || outputs[i].shape() != shapes[id] ||
        !outputs[i].allocated())
      outputs[i] = Tensor(dt, shapes[id]);
    std::memcpy(outputs[i].data(), ptr[id], outputs[i].bytes());
  }
  return Status::ok();
}

//===----------------------------------------------------------------------===//
// Model
//===----------------------------------------------------------------------===//

void kiln::runtime::setNumThreads(int n) {
  omp_set_num_threads(n > 0 ? n : omp_get_num_procs());
}

int kiln::runtime::numThreads() { return omp_get_max_threads(); }

ThreadScope::ThreadScope(int n) {
  if (n > 0) {
    saved_ = omp_get_max_threads();
    omp_set_num_threads(n);
  }
}

ThreadScope::~ThreadScope() {
  if (saved_ > 0)
    omp_set_num_threads(saved_);
}

Model::~Model() = default;

Status Model::load(const std::string &path, std::unique_ptr<Model> &out,
                   const LoadOptions &options) {
  std::vector<uint8_t> bytes;
  if (Status s = readFile(path, bytes, FLATBUFFERS_MAX_BUFFER_SIZE - 1,
                          ".kart artifact");
      !s)
    return s;
  size_t slash = path.find_last_of('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  Status s = fromBytes(std::move(bytes), out, dir.empty() ? "/" : dir, options);
  if (!s)
    return Status::error(path + ": " + s.message());
  return s;
}

Status Model::fromBytes(std::vector<uint8_t> bytes, std::unique_ptr<Model> &out,
                        const std::string &dir, const LoadOptions &options) {
  std::unique_ptr<Model> m(new Model());
  // Keep the buffer 64-byte aligned so weights and the FlatBuffers tables
  // are aligned as the writer laid them out.
  m->bytes_.resize(bytes.size() + kAlign);
  size_t shift = alignUp(reinterpret_cast<uintptr_t>(m->bytes_.data())) -
                 reinterpret_cast<uintptr_t>(m->bytes_.data());
  if (!bytes.empty())
    std::memcpy(m->bytes_.data() + shift, bytes.data(), bytes.size());
  m->bytes_.resize(shift + bytes.size());
  m->base_ = shift;
  if (Status s = m->init(dir, options); !s)
    return s;
  out = std::move(m);
  return Status::ok();
}

// The FlatBuffers verifier checks the alignment of scalars and of vector
// lengths but not of 8-byte vector elements, which a damaged file can leave
// misaligned; reading them would be undefined behaviour.
static Status checkWideVectorAlignment(const kart::Program *p,
                                       const uint8_t *base) {
  auto check = [&](const auto *vec, const std::string &what) -> Status {
    if (!vec || vec->size() == 0)
      return Status::ok();
    size_t at = reinterpret_cast<const uint8_t *>(vec->data()) - base;
    if (at % 8)
      return Status::error("the artifact is corrupted: " + what +
                           " is misaligned at byte offset " +
                           std::to_string(at));
    return Status::ok();
  };
  if (p->functions())
    for (const kart::Function *fn : *p->functions()) {
      if (!fn)
        continue;
      std::string name = fn->name() ? fn->name()->str() : "?";
      if (fn->kernels())
        for (size_t i = 0; i < fn->kernels()->size(); ++i) {
          const kart::Kernel *k = fn->kernels()->Get(i);
          std::string where =
              "function '" + name + "' kernel " + std::to_string(i);
          if (Status s = check(k->ints(), where + " ints"); !s)
            return s;
          if (Status s = check(k->floats(), where + " floats"); !s)
            return s;
        }
      if (fn->constants())
        for (size_t i = 0; i < fn->constants()->size(); ++i)
          if (Status s = check(fn->constants()->Get(i)->shape(),
                               "function '" + name + "' constant " +
                                   std::to_string(i) + " shape");
              !s)
            return s;
    }
  if (p->parameters())
    for (size_t i = 0; i < p->parameters()->size(); ++i)
      if (Status s = check(p->parameters()->Get(i)->shape(),
                           "parameter " + std::to_string(i) + " shape");
          !s)
        return s;
  return Status::ok();
}

Status Model::init(const std::string &dir, const LoadOptions &options) {
  const uint8_t *data = bytes_.data() + base_;
  size_t size = bytes_.size() - base_;
  if (size < 8)
    return Status::error("the file is " + std::to_string(size) +
                         " bytes, too short to be a .kart artifact");
  if (!kart::ProgramBufferHasIdentifier(data))
    return Status::error("not a .kart artifact (bytes 4-7 should be 'KART')");
  if (size >= FLATBUFFERS_MAX_BUFFER_SIZE)
    return Status::error("the file is " + std::to_string(size) +
                         " bytes; .kart artifacts are limited to 2 GiB");
  flatbuffers::Verifier::Options opts;
  opts.max_tables = 100000000;
  flatbuffers::Verifier verifier(data, size, opts);
  if (!kart::VerifyProgramBuffer(verifier))
    return Status::error("the artifact is corrupted: its FlatBuffers tables "
                         "do not verify (truncated or damaged file)");
  const kart::Program *p = kart::GetProgram(data);
  if (p->version() != kFormatVersion)
    return Status::error(
        "artifact format version " + std::to_string(p->version()) +
        (p->version() > kFormatVersion ? " is newer than" : " is not") +
        " the version this runtime reads (" + std::to_string(kFormatVersion) +
        "); recompile the model with this "
        "kiln");
  if (Status s = checkWideVectorAlignment(p, data); !s)
    return s;
  if (!p->functions() || !p->parameters() || !p->weights() || !p->model())
    return Status::error("the artifact is missing its functions, parameters "
                         "or weights");
  model_ = p->model()->str();
  if (p->tokenizer() || p->vocab()) {
    std::vector<std::string> pieces;
    if (p->vocab())
      for (const flatbuffers::String *piece : *p->vocab())
        pieces.push_back(piece->str());
    std::vector<float> scores;
    if (p->vocab_scores())
      scores.assign(p->vocab_scores()->begin(), p->vocab_scores()->end());
    if (Status s = Tokenizer::fromParts(
            p->tokenizer() ? p->tokenizer()->str() : "", std::move(pieces),
            std::move(scores), p->bos_id(), p->eos_id(), tokenizer_);
        !s)
      return Status::error("the artifact's tokenizer is invalid: " +
                           s.message());
  }
  if (p->hparams())
    for (const kart::HParam *h : *p->hparams())
      if (h && h->name())
        hparams_.emplace_back(h->name()->str(), h->value());
  const uint8_t *weights = p->weights()->data();
  size_t wsize = p->weights()->size();
  // External weights: read and validate the file, then match by name.
  std::map<std::string, Tensor *> external;
  std::string wfile;
  if (p->weights_file() && p->weights_file()->size()) {
    // The artifact names a file beside itself and nothing else: a path
    // from the file would let an artifact make kiln open any file.
    std::string name = p->weights_file()->str();
    if (name.size() > 255 || name == "." || name == ".." ||
        name.find_first_of(std::string("/\0", 2)) != std::string::npos)
      return Status::error(
          "the artifact's weights_file '" +
          (name.size() > 80 ? name.substr(0, 77) + "..." : name) +
          "' is not a file name; an artifact's external weights lie beside "
          "it (or load it with an explicit weights file)");
    wfile =
        options.weightsFile.empty() ? dir + "/" + name : options.weightsFile;
    NamedTensors tensors;
    if (Status s = readSafetensors(wfile, tensors, p->parameters()->size()); !s)
      return Status::error("external weights: " + s.message());
    for (auto &[name, t] : tensors)
      externalWeights_.push_back(std::move(t));
    for (size_t i = 0; i < tensors.size(); ++i)
      external[tensors[i].first] = &externalWeights_[i];
  } else if (!options.weightsFile.empty()) {
    return Status::error("the artifact embeds its weights; a weights file "
                         "applies to artifacts compiled with "
                         "--external-weights");
  }
  for (size_t i = 0; i < p->parameters()->size(); ++i) {
    const kart::Parameter *pr = p->parameters()->Get(i);
    std::string name = pr->name() ? pr->name()->str() : "";
    auto bad = [&](const std::string &msg) {
      return Status::error("parameter " + std::to_string(i) + " ('" + name +
                           "'): " + msg);
    };
    if (name.empty() || !pr->shape())
      return bad("is missing its name or shape");
    if (!computable(pr->dtype()))
      return bad("has an element type the CPU runtime does not compute in");
    uint64_t n = 1;
    for (int64_t d : *pr->shape()) {
      if (d <= 0 || d > (int64_t(1) << 40))
        return bad("has an invalid dimension " + std::to_string(d));
      n *= static_cast<uint64_t>(d);
      if (n > (uint64_t(1) << 40))
        return bad("is too large");
    }
    uint64_t want = n * dtypeSize(fromKart(pr->dtype()));
    if (pr->size() != want)
      return bad("declares " + std::to_string(pr->size()) +
                 " bytes but its shape needs " + std::to_string(want));
    Shape shape(pr->shape()->begin(), pr->shape()->end());
    if (!wfile.empty()) {
      auto it = external.find(name);
      if (it == external.end())
        return bad("is missing from the external weights " + wfile);
      if (it->second->dtype() != fromKart(pr->dtype()) ||
          it->second->shape() != shape)
        return bad("is " + it->second->describe() + " in " + wfile +
                   ", but the artifact expects " +
                   shapeString(fromKart(pr->dtype()), shape));
      paramData_.push_back(static_cast<const uint8_t *>(it->second->data()));
      external.erase(it);
    } else {
      if (pr->offset() % 4 || pr->offset() > wsize ||
          pr->size() > wsize - pr->offset())
        return bad("bytes [" + std::to_string(pr->offset()) + ", " +
                   std::to_string(pr->offset() + pr->size()) +
                   ") are outside the " + std::to_string(wsize) +
                   "-byte weights section");
      paramData_.push_back(weights + pr->offset());
    }
    params_.push_back({name, fromKart(pr->dtype()), shape});
  }
  if (!external.empty())
    return Status::error("external weights " + wfile +
                         " hold tensors the artifact does not use, e.g. '" +
                         external.begin()->first + "'");
  paramVersion_.assign(paramData_.size(), 0);
  packed_ = std::make_unique<PackedWeights>();
  for (const kart::Function *f : *p->functions()) {
    if (!f)
      return Status::error("the artifact has an empty function entry");
    auto st = std::make_unique<FunctionState>(*p, *f, paramData_, optimizer_,
                                              paramVersion_, *packed_);
    if (Status s = st->verify(); !s)
      return s;
    auto pool = std::make_unique<StatePool>();
    pool->program = p;
    pool->function = f;
    for (const kart::Kernel *k : *f->kernels())
      pool->writesParameters |= k->op() == kart::Op::OptimizerUpdate;
    FunctionInfo info;
    info.name = f->name()->str();
    info.kernels = f->kernels()->size();
    info.values = f->values()->size();
    info.slots = f->num_slots();
    auto arg = [&](int id, std::string name) {
      ArgInfo a;
      a.name = std::move(name);
      const kart::Value *v = f->values()->Get(id);
      a.dtype = fromKart(v->dtype());
      for (const kart::Dim *d : *v->shape())
        a.dims.push_back(dimText(d, *p));
      return a;
    };
    for (const kart::Kernel *k : *f->kernels()) {
      std::string line = kart::EnumNameOp(k->op());
      auto name = [&](int id) {
        if (id < 0)
          return std::string("_");
        const kart::Value *v = f->values()->Get(id);
        std::string n = "%" + std::to_string(id);
        if (v->kind() == kart::ValueKind::Parameter)
          n += "<" + p->parameters()->Get(v->index())->name()->str() + ">";
        else if (v->kind() == kart::ValueKind::Intermediate)
          n += "[slot " + std::to_string(v->slot()) + "]";
        return n;
      };
      for (size_t i = 0; i < k->inputs()->size(); ++i)
        line += (i ? ", " : " ") + name(k->inputs()->Get(i));
      line += " ->";
      for (size_t i = 0; i < k->outputs()->size(); ++i)
        line += (i ? ", " : " ") + name(k->outputs()->Get(i));
      if (k->location())
        line += "  " + k->location()->str();
      info.plan.push_back(line);
    }
    for (size_t i = 0; i < f->inputs()->size(); ++i)
      info.inputs.push_back(
          arg(f->inputs()->Get(i), f->input_names()->Get(i)->str()));
    for (size_t i = 0; i < f->outputs()->size(); ++i)
      info.outputs.push_back(
          arg(f->outputs()->Get(i), "result" + std::to_string(i)));
    infos_.push_back(std::move(info));
    pool->idle.push_back(std::move(st));
    pools_.push_back(std::move(pool));
  }
  if (!tokenizer_.empty() && vocabSize() > 0)
    if (Status s = checkTokenizerFits(tokenizer_, vocabSize(),
                                      "the artifact's tokenizer");
        !s)
      return s;
  return Status::ok();
}

int64_t Model::vocabSize() const {
  for (const FunctionInfo &f : infos_) {
    if (f.name != "forward" || f.outputs.size() != 1 ||
        f.outputs[0].dims.empty())
      continue;
    const std::string &last = f.outputs[0].dims.back();
    if (last.empty() ||
        last.find_first_not_of("0123456789") != std::string::npos ||
        last.size() > 12)
      return -1;
    return std::stoll(last);
  }
  return -1;
}

Status Model::setTokenizer(Tokenizer tokenizer) {
  if (int64_t vocab = vocabSize(); vocab > 0)
    if (Status s = checkTokenizerFits(tokenizer, vocab, "the tokenizer"); !s)
      return s;
  tokenizer_ = std::move(tokenizer);
  tokenizerChanged_ = true;
  return Status::ok();
}

Status Model::saveArtifact(const std::string &path) const {
  if (!externalWeights_.empty())
    return Status::error(path + ": the artifact keeps its weights in a "
                                "separate file; save them with saveWeights");
  std::shared_lock<std::shared_mutex> reading(paramsMutex_);
  if (!tokenizerChanged_)
    return writeFileAtomically(
        path, {{bytes_.data() + base_, bytes_.size() - base_}});
  // The tokenizer differs from the loaded one: serialize the program again
  // with it (the weights keep their 64-byte alignment, see kart.fbs).
  std::unique_ptr<kart::ProgramT> program(
      kart::GetProgram(bytes_.data() + base_)->UnPack());
  program->tokenizer = tokenizer_.kind();
  program->vocab = tokenizer_.pieces();
  program->vocab_scores = tokenizer_.scores();
  program->bos_id = tokenizer_.bos();
  program->eos_id = tokenizer_.eos();
  flatbuffers::FlatBufferBuilder fbb;
  kart::FinishProgramBuffer(fbb, kart::Program::Pack(fbb, program.get()));
  return writeFileAtomically(path, {{fbb.GetBufferPointer(), fbb.GetSize()}});
}

Status Model::setParameters(
    const std::vector<std::pair<std::string, Tensor>> &tensors) {
  std::map<std::string, const Tensor *> byName;
  for (const auto &[name, t] : tensors)
    byName[name] = &t;
  std::vector<const Tensor *> source;
  for (const ParameterInfo &p : params_) {
    auto it = byName.find(p.name);
    if (it == byName.end())
      return Status::error("missing parameter '" + p.name + "'");
    if (it->second->dtype() != p.dtype || it->second->shape() != p.shape)
      return Status::error("parameter '" + p.name + "' is " +
                           it->second->describe() + ", the model expects " +
                           shapeString(p.dtype, p.shape));
    source.push_back(it->second);
    byName.erase(it);
  }
  if (!byName.empty())
    return Status::error("'" + byName.begin()->first +
                         "' is not a parameter of the model");
  auto writing = lockParameters();
  for (size_t i = 0; i < params_.size(); ++i)
    std::memcpy(parameterData(i), source[i]->data(), source[i]->bytes());
  return Status::ok();
}

float *Model::parameterData(size_t i) {
  // The caller may write: packed copies of this parameter are stale.
  ++paramVersion_.at(i);
  // The bytes live in bytes_ or externalWeights_, both owned by the model.
  return reinterpret_cast<float *>(const_cast<uint8_t *>(paramData_.at(i)));
}

Status Model::run(const std::string &function,
                  const std::map<std::string, Tensor> &inputs,
                  std::vector<Tensor> &outputs, const RunOptions &options) {
  for (size_t i = 0; i < infos_.size(); ++i) {
    if (infos_[i].name != function)
      continue;
    StatePool &pool = *pools_[i];
    Borrowed borrowed(pool);
    FunctionState *state = nullptr;
    if (Status s = borrowed.get([&] { return newState(pool); }, state); !s)
      return s;
    ThreadScope threads(threads_);
    if (pool.writesParameters) {
      std::unique_lock<std::shared_mutex> writing(paramsMutex_);
      return state->run(inputs, outputs, options);
    }
    std::shared_lock<std::shared_mutex> reading(paramsMutex_);
    return state->run(inputs, outputs, options);
  }
  std::string names;
  for (const FunctionInfo &f : infos_)
    names += (names.empty() ? "" : ", ") + f.name;
  return Status::error("the model has no function '" + function +
                       "'; it has: " + names);
}

Status Model::memoryReport(const std::string &function,
                           const std::map<std::string, int64_t> &dims,
                           MemoryReport &report) {
  for (size_t i = 0; i < infos_.size(); ++i)
    if (infos_[i].name == function) {
      Borrowed borrowed(*pools_[i]);
      FunctionState *state = nullptr;
      if (Status s = borrowed.get([&] { return newState(*pools_[i]); }, state);
          !s)
        return s;
      if (Status s = state->bindDims(dims); !s)
        return s;
      if (Status s = state->planShapes(); !s)
        return s;
      report = state->memory();
      return Status::ok();
    }
  return Status::error("the model has no function '" + function + "'");
}

std::unique_ptr<FunctionState> Model::newState(const StatePool &pool) {
  return std::make_unique<FunctionState>(*pool.program, *pool.function,
                                         paramData_, optimizer_,
                                         paramVersion_, *packed_);
}

Status Model::parameter(const std::string &name, Tensor &out) const {
  std::shared_lock<std::shared_mutex> reading(paramsMutex_);
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].name == name) {
      out = Tensor(params_[i].dtype, params_[i].shape);
      std::memcpy(out.data(), paramData_[i], out.bytes());
      return Status::ok();
    }
  return Status::error("the model has no parameter '" + name + "'");
}

Status Model::saveWeights(const std::string &path) const {
  NamedTensors tensors;
  for (const ParameterInfo &p : params_) {
    Tensor t;
    if (Status s = parameter(p.name, t); !s)
      return s;
    tensors.emplace_back(p.name, std::move(t));
  }
  return writeSafetensors(path, tensors);
}
