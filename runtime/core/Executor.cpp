//===- Executor.cpp - running the kernels of one call ---------------------===//
#include "runtime/Memory.h"
#include "runtime/core/Device.h"
#include "runtime/core/FunctionState.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

using namespace kiln;
using namespace kiln::runtime;
using kart::Op;

/// The trace slice of kernel `k` that ran from `startUs` until now.
ProfileSlice FunctionState::kernelSlice(const kart::Kernel &k, int index,
                                        const KernelContext &ctx,
                                        double startUs, Profiler *profiler) {
  ProfileSlice s;
  s.durationUs = profiler->nowUs() - startUs;
  s.startUs = startUs;
  s.thread = profiler->threadIndex();
  s.function = fn.name()->str();
  s.name = kart::EnumNameOp(k.op());
  s.kernel = index;
  if (k.location())
    s.location = k.location()->str();
  auto add = [&](const std::vector<View> &views) {
    std::string list;
    for (const View &v : views) {
      if (!v.shape)
        continue;
      if (!list.empty())
        list += ", ";
      list += shapeString(v.dtype, *v.shape);
      // A quantized weight: its codes (the scales are a few percent).
      s.bytes += v.quant && v.quant->format != quant::Format::Int8
                     ? static_cast<uint64_t>(v.numel() + 1) / 2
                 : v.quant
                     ? static_cast<uint64_t>(v.numel())
                     : static_cast<uint64_t>(v.numel()) * dtypeSize(v.dtype);
    }
    return list;
  };
  std::string in = add(ctx.in), out = add(ctx.out);
  s.shapes = in + " -> " + out;
  return s;
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
  const KernelChoice choice = options.kernels.value_or(defaultKernelChoice());
  if (options.outputReady)
    for (size_t i : outputsAtStart)
      options.outputReady(i, ptr[fn.outputs()->Get(i)]);
  int kernelIndex = -1;
  for (const kart::Kernel *k : *fn.kernels()) {
    ++kernelIndex;
    if (k->device() != kart::Device::CPU)
      return Status::error(
          "'" + fn.name()->str() + "' was compiled for the CUDA device only (" +
          optionRef("--target=cuda", "target=\"cuda\"") + "): run it with " +
          optionRef("--device=cuda", "device=\"cuda\"") +
          ", or compile it with " +
          optionRef("--target=cpu,cuda", "target=\"cpu,cuda\"") +
          " to run on the CPU too");
    KernelContext ctx{*k, {}, {}, symbols, primitives, &workspace};
    ctx.training = options.training;
    ctx.choice = choice;
    ctx.seed = options.seed;
    if (opInfo(k->op()).has(kWritesParameter)) {
      ctx.optimizer = &optimizer;
      ctx.paramIndex = fn.values()->Get(k->inputs()->Get(0))->index();
      ctx.paramFrozen = !prog.parameters()->Get(ctx.paramIndex)->trainable();
      ++paramVersion[ctx.paramIndex];
    }
    ctx.paramVersions = &paramVersion;
    ctx.packed = &packed;
    for (int id : *k->inputs())
      ctx.inParams.push_back(id >= 0 && fn.values()->Get(id)->kind() ==
                                            kart::ValueKind::Parameter
                                 ? fn.values()->Get(id)->index()
                                 : -1);
    for (int id : *k->inputs()) {
      if (id < 0) {
        ctx.in.push_back(View{});
        continue;
      }
      const kart::Value *v = fn.values()->Get(id);
      ctx.in.push_back(View{ptr[id], fromKart(v->dtype()), &shapes[id],
                            v->kind() == kart::ValueKind::Parameter
                                ? quantViews[v->index()]
                                : nullptr});
    }
    for (int id : *k->outputs())
      ctx.out.push_back(
          View{ptr[id], fromKart(fn.values()->Get(id)->dtype()), &shapes[id]});
    auto t0 = profile ? std::chrono::steady_clock::now()
                      : std::chrono::steady_clock::time_point();
    Profiler *profiler = options.profiler;
    double startUs = profiler ? profiler->nowUs() : 0;
    if (options.beforeKernel)
      options.beforeKernel(ctx);
    // The loader admits only kernels for devices this runtime has.
    if (Status s = findDevice(k->device())->run(ctx); !s)
      return s;
    if (profiler)
      profiler->record(kernelSlice(*k, kernelIndex, ctx, startUs, profiler));
    if (options.afterKernel)
      options.afterKernel(ctx);
    if (options.outputReady)
      for (size_t i : outputsAfter[static_cast<size_t>(kernelIndex)])
        options.outputReady(i, ptr[fn.outputs()->Get(i)]);
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
  prepareOutputs(outputs);
  for (size_t i = 0; i < outputs.size(); ++i)
    std::memcpy(outputs[i].data(), ptr[fn.outputs()->Get(i)],
                outputs[i].bytes());
  return Status::ok();
}

void FunctionState::prepareOutputs(std::vector<Tensor> &outputs) const {
  // Outputs that already have the right type and shape (a caller running
  // the same function again, like the trainer) are refilled in place.
  size_t nout = fn.outputs()->size();
  outputs.resize(nout);
  for (size_t i = 0; i < nout; ++i) {
    int id = fn.outputs()->Get(i);
    DType dt = fromKart(fn.values()->Get(id)->dtype());
    if (outputs[i].dtype() != dt || outputs[i].shape() != shapes[id] ||
        !outputs[i].allocated())
      outputs[i] = Tensor::uninitialized(dt, shapes[id]);
  }
}

namespace {

/// OMP_NUM_THREADS's first count when set and valid, else every core.
int defaultThreads() {
  static const int n = [] {
    if (const char *e = std::getenv("OMP_NUM_THREADS")) {
      char *end = nullptr;
      long v = std::strtol(e, &end, 10);
      if (end != e && v > 0 && v <= 4096)
        return static_cast<int>(v);
    }
    return omp_get_num_procs();
  }();
  return n;
}

std::atomic<int> chosenThreads{0};

} // namespace

void kiln::runtime::setNumThreads(int n) { chosenThreads = n > 0 ? n : 0; }

int kiln::runtime::numThreads() {
  int n = chosenThreads;
  return n > 0 ? n : defaultThreads();
}

ThreadScope::ThreadScope(int n) {
  saved_ = omp_get_max_threads();
  omp_set_num_threads(n > 0 ? n : numThreads());
}

ThreadScope::~ThreadScope() {
  if (saved_ > 0)
    omp_set_num_threads(saved_);
}
