//===- Verify.cpp - load-time checks of a function ------------------------===//
#include "runtime/core/FunctionState.h"

#include <algorithm>
#include <set>

using namespace kiln;
using namespace kiln::runtime;
using kart::Op;

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
                         std::to_string(fn.num_slots()) + " arena slots for " +
                         std::to_string(nvalues) +
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
