//===- FunctionState.h - one function's execution context -------*- C++ -*-===//
//
// Internal to the runtime. A FunctionState holds one function's verified
// tables and the workspace of one call at a time (arena, bound shapes,
// offsets, oneDNN primitives); a StatePool keeps the idle ones of a
// function, so concurrent calls never share one. Its work is split by
// subsystem:
//
//   Verify.cpp      load-time checks of the function's tables and kernels
//   MemoryPlan.cpp  binding inputs and symbols, shapes, the arena plan
//   Executor.cpp    running the kernels of one call
//   cuda/Execute.cpp running them on the CUDA device
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_CORE_FUNCTIONSTATE_H
#define KILN_RUNTIME_CORE_FUNCTIONSTATE_H

#include "runtime/Kernels.h"
#include "runtime/Model.h"
#include "runtime/cuda/Driver.h"

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kiln::runtime {

namespace cuda {
class Gpu;
}

using Shape = std::vector<int64_t>;

constexpr size_t kAlign = 64;
inline size_t alignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
/// The most one intermediate may take (1 TiB): far beyond any machine, small
/// enough that sums of a plan's values cannot overflow.
constexpr uint64_t kMaxValueBytes = uint64_t(1) << 40;

inline DType fromKart(kart::DType t) { return static_cast<DType>(t); }

inline bool computable(kart::DType t) {
  return t == kart::DType::F32 || t == kart::DType::I32 ||
         t == kart::DType::I64 || t == kart::DType::Bool ||
         t == kart::DType::F64;
}

inline std::string dimText(const kart::Dim *d, const kart::Program &p) {
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

/// A function's verified tables plus the per-call workspace.
class FunctionState {
public:
  FunctionState(const kart::Program &p, const kart::Function &f,
                const std::vector<const uint8_t *> &params,
                const std::vector<const quant::QuantView *> &quantViews,
                OptimizerState &optimizer, std::vector<uint64_t> &versions,
                PackedWeights &packed)
      : prog(p), fn(f), paramData(params), quantViews(quantViews),
        optimizer(optimizer), paramVersion(versions), packed(packed) {}

  Status verify();
  Status bindInputs(const std::map<std::string, Tensor> &inputs);
  Status bindDims(const std::map<std::string, int64_t> &dims);
  Status planShapes();
  Status run(const std::map<std::string, Tensor> &inputs,
             std::vector<Tensor> &outputs, const RunOptions &options);
  /// The same call on the model's GPU (runtime/cuda/Execute.cpp).
  Status runCuda(const std::map<std::string, Tensor> &inputs,
                 std::vector<Tensor> &outputs, const RunOptions &options,
                 cuda::Gpu &gpu);
  MemoryReport memory();
  /// The trace slice of kernel `index` (`k`), which ran from `startUs`.
  ProfileSlice kernelSlice(const kart::Kernel &k, int index,
                           const KernelContext &ctx, double startUs,
                           Profiler *profiler);

  const kart::Program &prog;
  const kart::Function &fn;
  const std::vector<const uint8_t *> &paramData;
  /// One per model parameter (the auxiliary tensors of quantized weights
  /// come after them in the table): the quantized ones' views, else null.
  const std::vector<const quant::QuantView *> &quantViews;
  OptimizerState &optimizer;
  std::vector<uint64_t> &paramVersion;
  PackedWeights &packed;

private:
  Status valueError(int id, const std::string &msg) const;
  /// `outputs` sized and shaped as the call's results (kept where they
  /// already are), for the results to be copied into.
  void prepareOutputs(std::vector<Tensor> &outputs) const;
  Status checkKernel(size_t index, std::vector<bool> &written);
  int storageOf(int id) const; // the value whose arena bytes `id` uses

  std::vector<std::vector<uint8_t>> constants;
  std::vector<int64_t> symbols;
  std::vector<bool> bound;
  std::vector<Shape> shapes;
  // Lifetimes of intermediates (first and last kernel touching them) and,
  // per binding of the symbols, their byte offsets in the arena.
  std::vector<int> defAt, lastUse;
  // A value that reuses the storage of the kernel input it replaces (a
  // reshape's result, the logits' gradient over the logits), or -1.
  std::vector<int> aliasOf;
  // RunOptions::outputReady: the function outputs final after kernel k
  // (the kernel that computes them), and those final before any kernel
  // (inputs, parameters, constants returned as they are).
  std::vector<std::vector<size_t>> outputsAfter;
  std::vector<size_t> outputsAtStart;
  std::vector<size_t> offsets;
  std::vector<int64_t> plannedFor; // the symbols the offsets were planned for
  size_t arenaBytes = 0;
  void planOffsets();
  std::vector<uint8_t> arenaStorage;
  // On the CUDA device: the arena, the call's inputs, kernels' scratch and
  // the function's constants.
  cuda::DeviceBuffer deviceArena, deviceInputs, deviceScratch;
  std::vector<std::unique_ptr<cuda::DeviceBuffer>> deviceConstants;
  PrimitiveCache primitives;
  Workspace workspace;
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

} // namespace kiln::runtime

#endif
