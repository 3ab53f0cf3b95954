//===- KvCache.cpp - key/value caches for compiled decoding ---------------===//
#include "runtime/KvCache.h"

#include "runtime/Memory.h"

#include <algorithm>
#include <climits>
#include <cstring>

using namespace kiln::runtime;

namespace {

/// A cache's width: the last dimension of its input, a number.
bool widthOf(const ArgInfo &a, int64_t &width) {
  if (a.dims.size() != 3 || a.dims[2].empty() || a.dims[2].size() > 12)
    return false;
  width = 0;
  for (char ch : a.dims[2]) {
    if (ch < '0' || ch > '9')
      return false;
    width = width * 10 + (ch - '0');
  }
  return width > 0;
}

const FunctionInfo *prepareFunction(const Model &model) {
  for (const FunctionInfo &f : model.functions())
    if (f.name == "prepare")
      return &f;
  return nullptr;
}

} // namespace

const FunctionInfo *KvCache::decodeFunction(const Model &model) {
  for (const FunctionInfo &f : model.functions())
    if (f.name == "decode" && !f.caches.empty())
      return &f;
  return nullptr;
}

int64_t KvCache::slotsFor(const Model &model, int64_t length) {
  const FunctionInfo *f = decodeFunction(model);
  if (!f)
    return length;
  int64_t widest = 0;
  for (const CacheInputs &c : f->caches) {
    if (c.window == 0)
      return length;
    widest = std::max(widest, c.window);
  }
  return std::min(length, widest);
}

Status KvCache::create(const Model &model, int64_t batch, int64_t slots,
                       std::unique_ptr<KvCache> &out) {
  const FunctionInfo *f = decodeFunction(model);
  if (!f)
    return Status::error(
        "the model has no compiled 'decode' function "
        "(compiling derives one from a causal decoder's "
        "forward; " +
        optionRef("kiln compile --decode", "kiln.compile(..., decode=True)") +
        " says why it cannot)");
  if (batch < 1 || slots < 1)
    return Status::error("a key/value cache needs batch >= 1 and slots >= 1, "
                         "got " +
                         std::to_string(batch) + " and " +
                         std::to_string(slots));
  std::unique_ptr<KvCache> c(new KvCache());
  c->slots_ = slots;
  c->rolling_ = true;
  uint64_t total = 0;
  for (const CacheInputs &ci : f->caches) {
    c->rolling_ = c->rolling_ && ci.window > 0 && ci.window <= slots;
    for (int input : {ci.key, ci.value}) {
      const ArgInfo &a = f->inputs[input];
      int64_t width = 0;
      if (!widthOf(a, width))
        return Status::error("decode's input '" + a.name +
                             "' is not a [B, S, width] cache");
      // batch, slots and width are each bounded by memory before this
      // product: checked below against the machine.
      double bytes = 4.0 * batch * slots * width;
      total += bytes < 1e18 ? static_cast<uint64_t>(bytes) : UINT64_MAX / 2;
      c->names_.push_back(a.name);
    }
  }
  if (uint64_t memory = physicalMemory(); memory && total > memory)
    return Status::error("the key/value caches for " + std::to_string(batch) +
                         " sequences of " + std::to_string(slots) +
                         " positions need " + formatBytes(total) +
                         ", more than this machine's " + formatBytes(memory));
  for (const CacheInputs &ci : f->caches)
    for (int input : {ci.key, ci.value}) {
      int64_t width = 0;
      widthOf(f->inputs[input], width);
      c->caches_.emplace_back(
          Tensor::uninitialized(DType::F32, {batch, slots, width}));
    }
  // Inputs that are neither the three nor a cache: the forward's other
  // inputs, and prepare's memory.N.
  std::vector<bool> cacheInput(f->inputs.size(), false);
  for (const CacheInputs &ci : f->caches)
    cacheInput[ci.key] = cacheInput[ci.value] = true;
  const FunctionInfo *prepare = prepareFunction(model);
  for (size_t i = 3; i < f->inputs.size(); ++i)
    if (!cacheInput[i] && f->inputs[i].name.rfind("memory.", 0) != 0)
      c->contextInputs_.push_back(f->inputs[i].name);
  if (prepare)
    for (const ArgInfo &a : prepare->inputs)
      if (std::find(c->contextInputs_.begin(), c->contextInputs_.end(),
                    a.name) == c->contextInputs_.end())
        c->contextInputs_.push_back(a.name);
  c->tokenType_ = f->inputs[0].dtype;
  c->lengths_.assign(static_cast<size_t>(batch), 0);
  out = std::move(c);
  return Status::ok();
}

int64_t KvCache::room(int64_t row) const {
  return rolling_ ? INT64_MAX : slots_ - lengths_[row];
}

size_t KvCache::bytes() const {
  size_t n = 0;
  for (const Tensor &t : caches_)
    n += t.bytes();
  return n;
}

Status KvCache::append(Model &model,
                       const std::vector<std::vector<int32_t>> &tokens,
                       Tensor &logits, const RunOptions &options) {
  int64_t B = batch();
  if (static_cast<int64_t>(tokens.size()) != B)
    return Status::error("the cache holds " + std::to_string(B) +
                         " sequences, got tokens for " +
                         std::to_string(tokens.size()));
  int64_t T = 0;
  for (int64_t b = 0; b < B; ++b) {
    int64_t n = static_cast<int64_t>(tokens[b].size());
    if (n > room(b))
      return Status::error(
          "sequence " + std::to_string(b) + " holds " +
          std::to_string(lengths_[b]) + " of " + std::to_string(slots_) +
          " positions; it has no room for " + std::to_string(n) + " more");
    if (lengths_[b] + n > INT32_MAX)
      return Status::error("sequence " + std::to_string(b) +
                           " would pass 2^31 positions");
    T = std::max(T, n);
  }
  if (T == 0)
    return Status::error("no new tokens to decode");
  Tensor ids(tokenType_, {B, T}), pos(DType::I32, {B, T}), len(DType::I32, {B});
  for (int64_t b = 0; b < B; ++b) {
    int64_t n = static_cast<int64_t>(tokens[b].size());
    len.as<int32_t>()[b] = static_cast<int32_t>(n);
    for (int64_t t = 0; t < T; ++t) {
      // Padding repeats the row's last position, so position tables and
      // rotations see valid positions; the attention ignores it.
      int64_t p = n > 0 ? lengths_[b] + std::min(t, n - 1)
                        : std::max<int64_t>(lengths_[b] - 1, 0);
      pos.as<int32_t>()[b * T + t] = static_cast<int32_t>(p);
      int32_t id = t < n ? tokens[b][t] : 0;
      if (tokenType_ == DType::I64)
        ids.as<int64_t>()[b * T + t] = id;
      else
        ids.as<int32_t>()[b * T + t] = id;
    }
  }
  const FunctionInfo *fp = decodeFunction(model);
  if (!fp)
    return Status::error("the model has no compiled 'decode' function");
  const FunctionInfo &f = *fp;
  if (!contextInputs_.empty() && context_.empty()) {
    std::string names;
    for (const std::string &n : contextInputs_)
      names += (names.empty() ? "'" : ", '") + n + "'";
    return Status::error("this model decodes against a source: give the "
                         "cache its " +
                         names + " first (setContext)");
  }
  std::map<std::string, Tensor> inputs{{f.inputs[0].name, std::move(ids)},
                                       {f.inputs[1].name, std::move(pos)},
                                       {f.inputs[2].name, std::move(len)}};
  for (auto &[name, t] : context_)
    inputs[name] = Tensor::view(t.dtype(), t.shape(), t.data());
  for (size_t i = 0; i < caches_.size(); ++i)
    inputs[names_[i]] =
        Tensor::view(DType::F32, caches_[i].shape(), caches_[i].data());
  std::vector<Tensor> out(1);
  out[0] = std::move(logits);
  Status s = model.run("decode", inputs, out, options);
  logits = std::move(out[0]);
  if (!s)
    return s;
  for (int64_t b = 0; b < B; ++b)
    lengths_[b] += static_cast<int64_t>(tokens[b].size());
  return Status::ok();
}

Status KvCache::setContext(Model &model,
                           const std::map<std::string, Tensor> &inputs,
                           const RunOptions &options) {
  if (contextInputs_.empty())
    return Status::error("this model decodes without a source: it takes no "
                         "context");
  for (const std::string &name : contextInputs_) {
    auto it = inputs.find(name);
    if (it == inputs.end())
      return Status::error("the context needs '" + name + "'");
    if (it->second.rank() < 1 || it->second.shape()[0] != batch())
      return Status::error("context input '" + name + "' is " +
                           it->second.describe() +
                           "; its first dimension "
                           "must be the cache's batch of " +
                           std::to_string(batch()));
  }
  for (const auto &[name, t] : inputs)
    if (std::find(contextInputs_.begin(), contextInputs_.end(), name) ==
        contextInputs_.end())
      return Status::error("the context takes no input '" + name + "'");
  std::map<std::string, Tensor> context;
  if (const FunctionInfo *prepare = prepareFunction(model)) {
    std::map<std::string, Tensor> args;
    for (const ArgInfo &a : prepare->inputs) {
      const Tensor &t = inputs.at(a.name);
      // prepare reads its inputs only.
      args[a.name] =
          Tensor::view(t.dtype(), t.shape(), const_cast<void *>(t.data()));
    }
    std::vector<Tensor> memory;
    if (Status s = model.run("prepare", args, memory, options); !s)
      return s;
    for (size_t i = 0; i < memory.size(); ++i)
      context["memory." + std::to_string(i)] = std::move(memory[i]);
  }
  const FunctionInfo *f = decodeFunction(model);
  for (const ArgInfo &a : f->inputs)
    if (auto it = inputs.find(a.name); it != inputs.end()) {
      // A copy of the bytes: the caller's tensor may be a view that goes.
      Tensor copy =
          Tensor::uninitialized(it->second.dtype(), it->second.shape());
      std::memcpy(copy.data(), it->second.data(), copy.bytes());
      context[a.name] = std::move(copy);
    }
  context_ = std::move(context);
  return Status::ok();
}
