//===- MemoryPlan.cpp - inputs, shapes and the arena plan -----------------===//
#include "runtime/Memory.h"
#include "runtime/core/FunctionState.h"

#include <algorithm>
#include <cstring>

using namespace kiln;
using namespace kiln::runtime;
using kart::Op;

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
