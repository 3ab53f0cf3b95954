//===- Verify.cpp - load-time checks of a function ------------------------===//
#include "runtime/core/FunctionState.h"

#include "runtime/Kernels.h"
#include "runtime/core/Device.h"
#include "runtime/core/OpTable.h"
#include "runtime/cuda/Executable.h"

#include <algorithm>
#include <set>
#include <string>

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
  const OpInfo *info = findOp(k->op());
  if (!info)
    return bad("unknown op code " + std::to_string(static_cast<int>(k->op())) +
               " (an artifact from a newer kiln?)");
  where += " (" + std::string(kart::EnumNameOp(k->op())) + ")";
  if (k->location() && k->location()->size())
    where += " at " + printable(k->location()->str());
  // Every kernel is checked against the CPU's registry (the op table's
  // rules); one on the CUDA device must also name the artifact's CUDA
  // executable and have a CUDA launch.
  const Device *device = &cpuDevice();
  if (k->device() == kart::Device::CUDA) {
    if (std::string why = cuda::checkCudaKernel(prog, *k); !why.empty())
      return bad(why);
  } else if (k->device() != kart::Device::CPU) {
    return bad("runs on device " +
               std::to_string(static_cast<int>(k->device())) +
               ", which this runtime does not know (an artifact from a "
               "newer kiln?)");
  } else if (k->executable() != -1) {
    return bad("a CPU kernel names backend executable " +
               std::to_string(k->executable()));
  }
  if (std::string why = checkAgainstRow(*k); !why.empty())
    return bad(why);
  if (!device->kernel(k->op()))
    return bad("has no kernel on this device");
  int nvalues = fn.values()->size();
  auto value = [&](int id) { return fn.values()->Get(id); };
  KernelOperands operands{*k, {}, {}, symbols.size()};
  for (size_t i = 0; i < k->inputs()->size(); ++i) {
    int id = k->inputs()->Get(i);
    if (id == -1 && info->optional(i)) {
      operands.in.push_back(nullptr);
      continue;
    }
    if (id < 0 || id >= nvalues)
      return bad("input " + std::to_string(i) + " names value " +
                 std::to_string(id) + " of " + std::to_string(nvalues));
    if (!written[id])
      return bad("reads value " + std::to_string(id) +
                 " before any kernel writes it");
    // Quantized weights are read only by the kernels that know their codes.
    if (value(id)->kind() == kart::ValueKind::Parameter &&
        quantViews[value(id)->index()] && !readsQuantizedWeight(k->op(), i))
      return bad("reads the quantized parameter '" +
                 prog.parameters()->Get(value(id)->index())->name()->str() +
                 "' as input " + std::to_string(i) +
                 "; quantized weights are read by matmuls (as the "
                 "right-hand side) and embeddings only");
    operands.in.push_back(value(id));
  }
  for (size_t i = 0; i < k->outputs()->size(); ++i) {
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
    operands.out.push_back(value(id));
  }
  if (info->check)
    if (std::string why = info->check(operands); !why.empty())
      return bad(why);
  return Status::ok();
}

Status FunctionState::verify() {
  std::string name = fn.name() ? fn.name()->str() : "";
  if (name.empty() || !fn.values() || !fn.kernels() || !fn.inputs() ||
      !fn.outputs() || !fn.input_names() ||
      fn.input_names()->size() != fn.inputs()->size())
    return Status::error("function '" + name + "' is missing tables");
  if (fn.output_names()) {
    if (fn.output_names()->size() != fn.outputs()->size())
      return Status::error("function '" + name + "' has " +
                           std::to_string(fn.output_names()->size()) +
                           " output names for " +
                           std::to_string(fn.outputs()->size()) + " outputs");
    // `kiln run --output-dir=D` writes D/NAME.npy: a name is a file name,
    // never a path out of D.
    std::set<std::string> seen;
    for (const flatbuffers::String *s : *fn.output_names()) {
      if (!s || s->size() == 0 || s->size() > 4096 ||
          !seen.insert(s->str()).second)
        return Status::error("function '" + name +
                             "' has an empty, overlong or repeated output "
                             "name");
      std::string n = s->str();
      if (n == "." || n == ".." ||
          n.find_first_of(std::string("/\\\0", 3)) != std::string::npos)
        return Status::error("function '" + name +
                             "' has an output name "
                             "that is not a file name: '" +
                             n + "'");
    }
  }
  size_t nsym = prog.symbols() ? prog.symbols()->size() : 0;
  symbols.assign(nsym, 0);
  int nvalues = fn.values()->size();
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
    if (v->memory_space() != kart::MemorySpace::Host)
      return valueError(id,
                        std::string("lives in memory space ") +
                            (v->memory_space() <= kart::MemorySpace::MAX
                                 ? kart::EnumNameMemorySpace(v->memory_space())
                                 : "unknown") +
                            "; this runtime keeps values in host memory");
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
      if (idx >= static_cast<int>(quantViews.size()))
        return valueError(id, "reads '" + p->name()->str() +
                                  "', which holds a quantized weight's "
                                  "scales, not a model parameter");
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
    if (fn.values()->Get(id)->kind() == kart::ValueKind::Parameter &&
        quantViews[fn.values()->Get(id)->index()])
      return Status::error("function '" + name + "', output " +
                           std::to_string(i) +
                           " returns a quantized parameter's codes");
  }
  shapes.resize(nvalues);
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
  // An output is final once the kernel that defines it has run: it lives to
  // the end, so nothing takes over its bytes.
  outputsAfter.assign(static_cast<size_t>(nk), {});
  outputsAtStart.clear();
  for (size_t i = 0; i < fn.outputs()->size(); ++i) {
    int at = defAt[fn.outputs()->Get(i)];
    if (at < 0)
      outputsAtStart.push_back(i);
    else
      outputsAfter[static_cast<size_t>(at)].push_back(i);
  }
  // In place: a result may take over an intermediate input that no later
  // kernel reads (and that is not a function output). The group then lives
  // from the first definition to the last use of any member.
  aliasOf.assign(nvalues, -1);
  for (int k = 0; k < nk; ++k) {
    const kart::Kernel *kk = fn.kernels()->Get(k);
    const OpInfo &info = opInfo(kk->op());
    if (info.inPlaceInput < 0)
      continue;
    int in = kk->inputs()->Get(info.inPlaceInput);
    int out = kk->outputs()->Get(info.inPlaceOutput);
    if (fn.values()->Get(in)->kind() == kart::ValueKind::Intermediate &&
        fn.values()->Get(in)->dtype() == fn.values()->Get(out)->dtype() &&
        lastUse[in] == k)
      aliasOf[out] = in;
  }
  return Status::ok();
}
