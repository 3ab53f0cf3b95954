//===- GpuCheck.cpp - training and timing on a real GPU -------------------===//
//
// The parts of scripts/gpu-check.sh that need a whole model on the GPU,
// with the runtime alone (the GPU machine has no compiler toolchain):
//
//   kiln-cuda-check train ARTIFACT TEXT STEPS    the Shakespeare model for
//       STEPS steps on the GPU (host AdamW, gradients from the GPU); exit 1
//       unless the loss falls
//   kiln-cuda-check bench ARTIFACT B T STEPS     GPT-2 124M (an artifact
//       compiled with --external-weights: random weights are written beside
//       it first): forward and training-step tokens/s (the compiled
//       train_step when the artifact has one: AdamW on the device) on the GPU
//       and the CPU,
//       and, from one profiled call of each on the GPU (CUDA events around
//       every kernel), the share of the kernel time spent in matrix products
//
//===----------------------------------------------------------------------===//
#include "runtime/Model.h"
#include "runtime/Profile.h"
#include "runtime/Random.h"
#include "runtime/Safetensors.h"
#include "runtime/Text.h"
#include "runtime/Trainer.h"
#include "runtime/kart_generated.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

using namespace kiln;
using namespace kiln::runtime;

namespace {

/// The device to check: cuda, unless $KILN_CUDA_CHECK_DEVICE says cpu (to
/// try the program itself where no GPU is).
std::string device() {
  const char *e = std::getenv("KILN_CUDA_CHECK_DEVICE");
  return e && *e ? e : "cuda";
}

int fail(const std::string &what) {
  std::fprintf(stderr, "kiln-cuda-check: %s\n", what.c_str());
  return 1;
}

double seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since)
      .count();
}

int train(const std::string &artifact, const std::string &textPath,
          int64_t steps) {
  std::unique_ptr<Model> model;
  LoadOptions load;
  load.device = device();
  if (Status s = Model::load(artifact, model, load); !s)
    return fail(s.message());
  std::printf("training on %s\n", model->deviceDescription().empty()
                                      ? "the CPU"
                                      : model->deviceDescription().c_str());
  std::ifstream in(textPath);
  std::stringstream text;
  text << in.rdbuf();
  std::vector<int32_t> ids;
  if (Status s = model->tokenizer().encode(text.str(), ids); !s)
    return fail(s.message());
  const int64_t B = 16, T = 64;
  TextData data;
  if (Status s = TextData::create(std::move(ids), 0.0, T, data); !s)
    return fail(s.message());
  TrainConfig config;
  config.lr = 3e-3;
  config.totalSteps = steps;
  config.warmupSteps = steps / 10;
  // kiln train compiled the whole step (forward, backward, AdamW with its
  // defaults, which these are) into the artifact: it runs on the GPU.
  for (const FunctionInfo &f : model->functions())
    config.compiledStep = config.compiledStep || f.name == "train_step";
  std::unique_ptr<Trainer> trainer;
  if (Status s = Trainer::create(*model, config, trainer); !s)
    return fail(s.message());
  SplitMix64 rng{1};
  double first = 0, last = 0;
  int64_t window = std::max<int64_t>(steps / 10, 1);
  auto start = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < steps; ++step) {
    Tensor tokens(DType::I32, {B, T}), targets(DType::I32, {B, T});
    data.trainBatch(rng, B, T, tokens, targets);
    StepStats stats;
    if (Status s =
            trainer->step({{{"tokens", tokens}, {"targets", targets}}}, stats);
        !s)
      return fail(s.message());
    if (step < window)
      first += stats.loss / window;
    if (step >= steps - window)
      last += stats.loss / window;
    if (step % 20 == 0 || step == steps - 1)
      std::printf("step %lld/%lld loss %.4f\n",
                  static_cast<long long>(step + 1),
                  static_cast<long long>(steps), stats.loss);
  }
  double t = seconds(start);
  std::printf("%lld steps in %.1f s (%.0f tokens/s); mean loss of the first "
              "%lld steps %.4f, of the last %lld %.4f\n",
              static_cast<long long>(steps), t, steps * B * T / t,
              static_cast<long long>(window), first,
              static_cast<long long>(window), last);
  if (!(last < first))
    return fail("the loss did not fall");
  return 0;
}

/// Random weights for the artifact's parameters, written where it expects
/// them (beside it).
Status writeRandomWeights(const std::string &artifact,
                          const std::string &weights) {
  std::ifstream in(artifact, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
  flatbuffers::Verifier v(bytes.data(), bytes.size());
  if (!kart::VerifyProgramBuffer(v))
    return Status::error(artifact + ": not an artifact");
  const kart::Program &p = *kart::GetProgram(bytes.data());
  NamedTensors tensors;
  SplitMix64 rng{3};
  for (const kart::Parameter *param : *p.parameters()) {
    std::vector<int64_t> shape(param->shape()->begin(), param->shape()->end());
    Tensor t(DType::F32, shape);
    for (int64_t i = 0; i < t.numel(); ++i)
      t.as<float>()[i] = static_cast<float>((rng.uniform() - 0.5) * 0.04);
    tensors.emplace_back(param->name()->str(), std::move(t));
  }
  return writeSafetensors(weights, tensors);
}

/// The GPU time of the kernels a profiler recorded, and the part of it
/// spent in matrix products.
struct KernelTime {
  double totalMs = 0, productMs = 0;
};
KernelTime kernelTime(const Profiler &profiler) {
  KernelTime t;
  for (const ProfileSlice &s : profiler.slices()) {
    if (s.kind != ProfileSlice::Kind::Kernel)
      continue;
    t.totalMs += s.durationUs / 1e3;
    if (s.name == "Matmul" || s.name == "FusedMatmul")
      t.productMs += s.durationUs / 1e3;
  }
  return t;
}

int bench(const std::string &artifact, int64_t B, int64_t T, int64_t steps) {
  std::string weights =
      artifact.substr(0, artifact.rfind('.')) + ".safetensors";
  if (Status s = writeRandomWeights(artifact, weights); !s)
    return fail(s.message());
  Tensor tokens(DType::I32, {B, T}), targets(DType::I32, {B, T});
  SplitMix64 rng{5};
  for (int64_t i = 0; i < B * T; ++i) {
    tokens.as<int32_t>()[i] = static_cast<int32_t>(rng.next() % 50257);
    targets.as<int32_t>()[i] = static_cast<int32_t>(rng.next() % 50257);
  }
  // $KILN_CUDA_CHECK_SKIP_CPU: the GPU alone (a second run).
  const char *skip = std::getenv("KILN_CUDA_CHECK_SKIP_CPU");
  std::vector<std::string> devices = {::device()};
  if (!(skip && *skip) && ::device() != "cpu")
    devices.push_back("cpu");
  for (const std::string &device : devices) {
    std::unique_ptr<Model> model;
    LoadOptions load;
    load.device = device;
    load.weightsFile = weights;
    if (Status s = Model::load(artifact, model, load); !s)
      return fail(s.message());
    std::string where = model->deviceDescription().empty()
                            ? std::string("CPU")
                            : model->deviceDescription();
    int64_t n = device == "cuda" ? steps : 1;
    std::vector<Tensor> out;
    if (Status s = model->run("forward", {{"tokens", tokens}}, out); !s)
      return fail(s.message()); // warm-up: weights go over
    auto start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < n; ++i)
      if (Status s = model->run("forward", {{"tokens", tokens}}, out); !s)
        return fail(s.message());
    double fwd = seconds(start) / n;
    TrainConfig config;
    for (const FunctionInfo &f : model->functions())
      config.compiledStep = config.compiledStep || f.name == "train_step";
    std::unique_ptr<Trainer> trainer;
    if (Status s = Trainer::create(*model, config, trainer); !s)
      return fail(s.message());
    StepStats stats;
    std::map<std::string, Tensor> batch = {{"tokens", tokens},
                                           {"targets", targets}};
    if (Status s = trainer->step({batch}, stats); !s)
      return fail(s.message());
    start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < n; ++i)
      if (Status s = trainer->step({batch}, stats); !s)
        return fail(s.message());
    double step = seconds(start) / n;
    std::printf("GPT-2 124M on %s, B=%lld T=%lld: forward %.1f ms (%.0f "
                "tokens/s), training step %.1f ms (%.0f tokens/s), loss %.3f\n",
                where.c_str(), static_cast<long long>(B),
                static_cast<long long>(T), fwd * 1e3, B * T / fwd, step * 1e3,
                B * T / step, stats.loss);
    if (device == "cpu")
      continue;
    // One profiled call of each: where the GPU's time goes.
    for (const char *what : {"forward", "training step"}) {
      auto profiler = std::make_shared<Profiler>();
      model->setProfiler(profiler);
      auto start = std::chrono::steady_clock::now();
      Status s = std::string(what) == "forward"
                     ? model->run("forward", {{"tokens", tokens}}, out)
                     : trainer->step({batch}, stats);
      double wall = seconds(start) * 1e3;
      model->setProfiler(nullptr);
      if (!s)
        return fail(s.message());
      KernelTime k = kernelTime(*profiler);
      std::printf("  %s, profiled: %.1f ms wall, %.1f ms in GPU kernels, of "
                  "which matrix products %.1f ms (%.0f%%)\n",
                  what, wall, k.totalMs, k.productMs,
                  k.totalMs > 0 ? 100 * k.productMs / k.totalMs : 0.0);
    }
  }
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  std::vector<std::string> a(argv + 1, argv + argc);
  if (a.size() == 4 && a[0] == "train")
    return train(a[1], a[2], std::atoll(a[3].c_str()));
  if (a.size() == 5 && a[0] == "bench")
    return bench(a[1], std::atoll(a[2].c_str()), std::atoll(a[3].c_str()),
                 std::atoll(a[4].c_str()));
  std::fprintf(stderr, "usage: kiln-cuda-check train ARTIFACT TEXT STEPS\n"
                       "       kiln-cuda-check bench ARTIFACT B T STEPS\n");
  return 2;
}
