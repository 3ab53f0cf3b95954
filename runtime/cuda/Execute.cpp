//===- Execute.cpp - running one call's kernels on the CUDA device --------===//
//
// The device side of FunctionState: the same memory plan as the CPU's
// (runtime/core/MemoryPlan.cpp) laid over a device arena, inputs copied in
// and outputs copied out at the call's boundary, parameters from the
// model's device copies, each kernel launched through runtime/cuda/Launch.h
// on the model's stream.
//
//===----------------------------------------------------------------------===//
#include "runtime/Profile.h"
#include "runtime/core/FunctionState.h"
#include "runtime/core/OpTable.h"
#include "runtime/cuda/Gpu.h"
#include "runtime/cuda/Launch.h"

#include <set>

using namespace kiln;
using namespace kiln::runtime;

namespace {

/// Launches into the model's fatbin; scratch from the function state.
class GpuLauncher final : public cuda::Launcher {
public:
  GpuLauncher(cuda::Gpu &gpu, cuda::DeviceBuffer &scratch,
              OptimizerState &optimizer)
      : gpu_(gpu), scratch_(scratch), optimizer_(optimizer) {}
  Status launch(const std::string &entry, unsigned grid, unsigned block,
                const void *args, size_t size) override {
    void *fn = nullptr;
    if (Status s = gpu_.function(entry, fn); !s)
      return s;
    return gpu_.driver().launch(fn, grid, block, args, size);
  }
  void *scratch(size_t bytes) override {
    if (bytes > scratch_.size()) {
      // Kernels still queued may use the old buffer: let them finish.
      if (!gpu_.driver().synchronize() ||
          !scratch_.reserve(gpu_.shared(), bytes * 2))
        return nullptr;
    }
    return scratch_.data();
  }
  long long *errorWord() override { return gpu_.errorWord(); }
  Status upload(void *device, const void *host, size_t bytes) override {
    // The host's buffer goes away when the kernel's launch returns.
    if (Status s = gpu_.driver().upload(device, host, bytes); !s)
      return s;
    return gpu_.driver().synchronize();
  }
  Status moments(int64_t param, int64_t n, bool adamw, float *&m,
                 float *&v) override {
    return gpu_.moments(optimizer_, param, n, adamw, m, v);
  }
  bool hasGemm() const override { return !gpu_.driver().blas().empty(); }
  Status gemm(const cuda::GemmCall &call) override {
    return gpu_.driver().gemm(call);
  }

private:
  cuda::Gpu &gpu_;
  cuda::DeviceBuffer &scratch_;
  OptimizerState &optimizer_;
};

/// A call's kernels timed on the GPU: one event before the first kernel
/// and one after each, read into the profiler's slices once the stream
/// has passed them all.
class KernelTimer {
public:
  KernelTimer(cuda::Driver &driver, Profiler *profiler)
      : driver_(driver), profiler_(profiler) {}
  ~KernelTimer() {
    for (void *e : events_)
      driver_.freeEvent(e);
  }
  bool on() const { return profiler_ != nullptr; }
  /// Marks the stream's position (before the first kernel, after each).
  Status mark() {
    void *e = nullptr;
    if (Status s = driver_.newEvent(e); !s)
      return s;
    events_.push_back(e);
    return driver_.mark(e);
  }
  /// Kernel slices[i] ran between marks i and i + 1.
  std::vector<ProfileSlice> slices;
  /// After the stream passed every mark: records the slices, placed from
  /// the call's start on the host (`startUs`).
  Status finish(double startUs) {
    for (size_t i = 0; i < slices.size() && i + 1 < events_.size(); ++i) {
      float from = 0, ms = 0;
      if (Status s = driver_.elapsedMs(events_[0], events_[i], from); !s)
        return s;
      if (Status s = driver_.elapsedMs(events_[i], events_[i + 1], ms); !s)
        return s;
      slices[i].startUs = startUs + from * 1e3;
      slices[i].durationUs = ms * 1e3;
      profiler_->record(std::move(slices[i]));
    }
    return Status::ok();
  }

private:
  cuda::Driver &driver_;
  Profiler *profiler_;
  std::vector<void *> events_;
};

size_t bytesOf(DType t, const Shape &s) {
  size_t n = dtypeSize(t);
  for (int64_t d : s)
    n *= static_cast<size_t>(d);
  return n;
}

} // namespace

Status FunctionState::runCuda(const std::map<std::string, Tensor> &inputs,
                              std::vector<Tensor> &outputs,
                              const RunOptions &options, cuda::Gpu &gpu) {
  if (Status s = bindInputs(inputs); !s)
    return s;
  if (Status s = planShapes(); !s)
    return s;
  planOffsets();
  std::lock_guard<std::mutex> lock(gpu.mutex());
  cuda::Driver &driver = gpu.driver();
  std::string name = fn.name()->str();
  auto failed = [&](const Status &s) {
    return Status::error("'" + name + "' on the CUDA device: " + s.message());
  };
  if (Status s = deviceArena.reserve(gpu.shared(), arenaBytes + kAlign); !s)
    return failed(s);
  auto *arena = static_cast<uint8_t *>(deviceArena.data());

  int nvalues = fn.values()->size();
  std::vector<void *> ptr(nvalues, nullptr);
  // Inputs, packed into one device buffer.
  size_t inputBytes = 0;
  for (int id = 0; id < nvalues; ++id)
    if (fn.values()->Get(id)->kind() == kart::ValueKind::Input)
      inputBytes +=
          alignUp(bytesOf(fromKart(fn.values()->Get(id)->dtype()), shapes[id]));
  if (Status s = deviceInputs.reserve(gpu.shared(), inputBytes); !s)
    return failed(s);
  size_t inputAt = 0;
  if (deviceConstants.size() != constants.size())
    deviceConstants.resize(constants.size());
  for (int id = 0; id < nvalues; ++id) {
    const kart::Value *v = fn.values()->Get(id);
    size_t bytes = bytesOf(fromKart(v->dtype()), shapes[id]);
    switch (v->kind()) {
    case kart::ValueKind::Input: {
      const Tensor &t = inputs.at(fn.input_names()->Get(v->index())->str());
      ptr[id] = static_cast<uint8_t *>(deviceInputs.data()) + inputAt;
      inputAt += alignUp(bytes);
      if (Status s = driver.upload(ptr[id], t.data(), bytes); !s)
        return failed(s);
      break;
    }
    case kart::ValueKind::Parameter: {
      size_t i = v->index();
      if (quantViews[i])
        return failed(Status::error(
            "parameter " + std::to_string(i) +
            " is stored quantized; the CUDA backend reads f32 weights"));
      if (Status s =
              gpu.parameter(i, paramData[i], bytes, paramVersion[i], ptr[id]);
          !s)
        return failed(s);
      break;
    }
    case kart::ValueKind::Constant: {
      size_t i = v->index();
      if (!deviceConstants[i]) {
        deviceConstants[i] = std::make_unique<cuda::DeviceBuffer>();
        if (Status s =
                deviceConstants[i]->reserve(gpu.shared(), constants[i].size());
            !s)
          return failed(s);
        if (Status s = driver.upload(deviceConstants[i]->data(),
                                     constants[i].data(), constants[i].size());
            !s)
          return failed(s);
      }
      ptr[id] = deviceConstants[i]->data();
      break;
    }
    default:
      ptr[id] = arena + offsets[id];
    }
  }
  if (Status s = driver.zero(gpu.errorWord(), sizeof(long long)); !s)
    return failed(s);

  // Inputs the kernels write in place (decode's key/value caches) go back
  // to the caller's tensors after the call, as on the CPU.
  std::set<int> writtenIn;
  for (const kart::Kernel *k : *fn.kernels())
    for (uint32_t i = 0; i < k->inputs()->size(); ++i)
      if (writtenInputs(k->op()) >> i & 1) {
        int id = k->inputs()->Get(i);
        if (id >= 0 && fn.values()->Get(id)->kind() == kart::ValueKind::Input)
          writtenIn.insert(id);
      }

  GpuLauncher launcher(gpu, deviceScratch, optimizer);
  KernelTimer timer(driver, options.profiler);
  double startUs = timer.on() ? options.profiler->nowUs() : 0;
  if (timer.on())
    if (Status s = timer.mark(); !s)
      return failed(s);
  std::set<size_t> written;
  int kernelIndex = -1;
  for (const kart::Kernel *k : *fn.kernels()) {
    ++kernelIndex;
    KernelContext ctx{*k, {}, {}, symbols, primitives, &workspace};
    ctx.training = options.training;
    ctx.seed = options.seed;
    if (opInfo(k->op()).has(kWritesParameter)) {
      ctx.paramIndex = fn.values()->Get(k->inputs()->Get(0))->index();
      ctx.paramFrozen = !prog.parameters()->Get(ctx.paramIndex)->trainable();
      written.insert(static_cast<size_t>(ctx.paramIndex));
    }
    for (int id : *k->inputs()) {
      if (id < 0) {
        ctx.in.push_back(View{});
        continue;
      }
      ctx.in.push_back(
          View{ptr[id], fromKart(fn.values()->Get(id)->dtype()), &shapes[id]});
    }
    for (int id : *k->outputs())
      ctx.out.push_back(
          View{ptr[id], fromKart(fn.values()->Get(id)->dtype()), &shapes[id]});
    if (Status s = cuda::launchKernel(
            ctx, gpu.model(), name, static_cast<size_t>(kernelIndex), launcher);
        !s)
      return failed(Status::error("kernel " + std::to_string(kernelIndex) +
                                  ": " + s.message()));
    if (timer.on()) {
      if (Status s = timer.mark(); !s)
        return failed(s);
      timer.slices.push_back(
          kernelSlice(*k, kernelIndex, ctx, 0, options.profiler));
    }
  }

  prepareOutputs(outputs);
  for (size_t i = 0; i < outputs.size(); ++i)
    if (Status s = driver.download(outputs[i].data(), ptr[fn.outputs()->Get(i)],
                                   outputs[i].bytes());
        !s)
      return failed(s);
  for (int id : writtenIn) {
    const kart::Value *v = fn.values()->Get(id);
    const Tensor &t = inputs.at(fn.input_names()->Get(v->index())->str());
    if (Status s =
            driver.download(const_cast<void *>(t.data()), ptr[id], t.bytes());
        !s)
      return failed(s);
  }
  long long bad = 0;
  if (Status s = driver.download(&bad, gpu.errorWord(), sizeof bad); !s)
    return failed(s);
  if (bad < 0)
    return failed(Status::error(
        "decoding row " + std::to_string(-bad - 1) +
        ": its tokens' positions are not consecutive from 0 or later "
        "within the key/value cache, or its length is out of range"));
  if (bad)
    return failed(Status::error(
        "an index (a token or target id) is out of range at position " +
        std::to_string(bad - 1) + " of the ids a kernel read"));
  // The downloads waited for the stream: every mark has passed.
  if (timer.on())
    if (Status s = timer.finish(startUs); !s)
      return failed(s);
  // A train step wrote parameters and moments on the device: they stay
  // there, newer than the host's copies, until the host reads them
  // (Model::parameter, a checkpoint) or switches devices.
  for (size_t i : written)
    gpu.wroteParameter(i, ++paramVersion[i]);
  if (!written.empty())
    gpu.wroteMoments();
  return Status::ok();
}
