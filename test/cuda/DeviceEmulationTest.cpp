//===- DeviceEmulationTest.cpp - the CUDA device path without a GPU -------===//
//
// A model compiled with --target=cpu,cuda runs through the whole CUDA
// device path — Model::useCuda, the device arena from the CPU's memory
// plan, parameters copied over and kept current by version, inputs and
// outputs crossing at the call boundary, every kernel launched through
// runtime/cuda/Launch.cpp, the error word — on a Driver that emulates the
// GPU: host memory, and the generated kernels (this test links them, built
// through Emulation.h) run as CUDA would run them. Only the thin layer over
// libcuda.so.1 (runtime/cuda/Driver.cpp) is left to the real GPU: built
// with KILN_REAL_GPU, the same tests run there as kiln-cuda-device-tests
// (scripts/gpu-check.sh), skipping where no driver or GPU is. Results must
// match the CPU's to 1e-4, the bound on a GPU.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_REAL_GPU
#include "test/cuda/Emulation.h"
#include "test/cuda/ReferenceGemm.h"
#endif

#include "runtime/KvCache.h"
#include "runtime/Model.h"
#include "runtime/Profile.h"
#include "runtime/Random.h"
#include "runtime/Trainer.h"
#include "runtime/cuda/Driver.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <list>
#include <set>

using namespace kiln::runtime;

namespace {

#ifndef KILN_REAL_GPU
/// The GPU, emulated: device memory is host memory, a module is a model's
/// generated kernels in this program, and cuBLASLt (unless `withBlas` is
/// false) is ReferenceGemm.h.
class EmulatedDriver final : public cuda::Driver {
public:
  std::string describe() const override { return "emulated GPU"; }
  int computeCapability() const override { return 90; }
  Status allocate(size_t bytes, void *&ptr) override {
    ptr = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (!ptr)
      return Status::error("out of memory");
    std::memset(ptr, 0xff, bytes); // NaN: nothing may read unwritten memory
    ++allocations;
    return Status::ok();
  }
  void release(void *ptr) override { std::free(ptr); }
  Status upload(void *device, const void *host, size_t bytes) override {
    uploaded += bytes;
    std::memcpy(device, host, bytes);
    return Status::ok();
  }
  Status download(void *host, const void *device, size_t bytes) override {
    downloaded += bytes;
    std::memcpy(host, device, bytes);
    return Status::ok();
  }
  Status zero(void *device, size_t bytes) override {
    std::memset(device, 0, bytes);
    return Status::ok();
  }
  Status synchronize() override { return Status::ok(); }
  Status loadModule(const void *, size_t, const std::string &model,
                    void *&module) override {
    models.push_back(model);
    module = &models.back();
    return Status::ok();
  }
  Status function(void *module, const std::string &entry, void *&fn) override {
    const KilnCudaEntry *k =
        kiln_emulation::find(*static_cast<std::string *>(module), entry);
    if (!k)
      return Status::error("no kernel '" + entry + "'");
    fn = const_cast<KilnCudaEntry *>(k);
    return Status::ok();
  }
  Status launch(void *fn, unsigned grid, unsigned block, const void *args,
                size_t) override {
    ++launches;
    kilnLaunch(static_cast<KilnCudaEntry *>(fn)->run, args, grid, block);
    return Status::ok();
  }
  std::string blas() const override {
    return withBlas ? "cuBLASLt (emulated)" : "";
  }
  Status gemm(const cuda::GemmCall &call) override {
    ++gemms;
    kilnReferenceGemm(call);
    return Status::ok();
  }
  // Launches finish before they return: an event is the host's clock.
  Status newEvent(void *&event) override {
    event = new std::chrono::steady_clock::time_point();
    ++events;
    return Status::ok();
  }
  void freeEvent(void *event) override {
    delete static_cast<std::chrono::steady_clock::time_point *>(event);
    --events;
  }
  Status mark(void *event) override {
    *static_cast<std::chrono::steady_clock::time_point *>(event) =
        std::chrono::steady_clock::now();
    return Status::ok();
  }
  Status elapsedMs(void *from, void *to, float &ms) override {
    using T = std::chrono::steady_clock::time_point;
    ms = std::chrono::duration<float, std::milli>(*static_cast<T *>(to) -
                                                  *static_cast<T *>(from))
             .count();
    return Status::ok();
  }

  bool withBlas = true;
  int events = 0;
  std::list<std::string> models;
  size_t uploaded = 0, downloaded = 0;
  int launches = 0, allocations = 0, gemms = 0;
};
#endif

/// The test artifacts: built into the build folder, or where
/// $KILN_CUDA_TEST_DIR says (a copy of it on a GPU machine).
std::string artifact(const std::string &name) {
  const char *dir = std::getenv("KILN_CUDA_TEST_DIR");
  return std::string(dir && *dir ? dir : KILN_CUDA_TEST_DIR) + "/" + name;
}

void expectClose(const Tensor &gpu, const Tensor &cpu,
                 const std::string &what) {
  ASSERT_EQ(gpu.shape(), cpu.shape()) << what;
  for (int64_t i = 0; i < cpu.numel(); ++i) {
    float g = gpu.as<float>()[i], c = cpu.as<float>()[i];
    ASSERT_NEAR(g, c, 1e-4f * std::max(1.0f, std::fabs(c)))
        << what << ", element " << i;
  }
}

/// Every parameter of `gpu` within 1e-4 of `cpu`'s (read through
/// Model::parameter, which brings a GPU's newer copies home).
void expectParametersClose(const Model &gpu, const Model &cpu,
                           const std::string &when) {
  for (const ParameterInfo &p : cpu.parameters()) {
    Tensor a, b;
    ASSERT_TRUE(cpu.parameter(p.name, a));
    Status s = gpu.parameter(p.name, b);
    ASSERT_TRUE(s) << s.message();
    expectClose(b, a, p.name + " " + when);
  }
}

class DeviceEmulation : public ::testing::Test {
protected:
  void SetUp() override {
    Status s = Model::load(artifact("gpt2-cuda.kart"), cpu);
    if (!s && s.message().find("cannot open") != std::string::npos)
      GTEST_SKIP() << "no gpt2-cuda.kart (built only where nvcc is)";
    ASSERT_TRUE(s) << s.message();
    ASSERT_TRUE(Model::load(artifact("gpt2-cuda.kart"), gpu));
#ifdef KILN_REAL_GPU
    std::shared_ptr<cuda::Driver> real;
    if (Status o = cuda::openCudaDriver(0, real); !o)
      GTEST_SKIP() << o.message();
    driver = real;
    std::cout << "GPU: " << real->describe() << "\n";
#else
    emulated = std::make_shared<EmulatedDriver>();
    driver = emulated;
#endif
    s = gpu->useCuda(driver);
    ASSERT_TRUE(s) << s.message();
    SplitMix64 rng{11};
    for (int64_t i = 0; i < B * T; ++i) {
      tokens.as<int32_t>()[i] = static_cast<int32_t>(rng.next() % 37);
      targets.as<int32_t>()[i] = static_cast<int32_t>(rng.next() % 37);
    }
  }
  const int64_t B = 3, T = 5;
  std::unique_ptr<Model> cpu, gpu;
  std::shared_ptr<cuda::Driver> driver;
#ifndef KILN_REAL_GPU
  std::shared_ptr<EmulatedDriver> emulated;
#endif
  Tensor tokens{DType::I32, {3, 5}}, targets{DType::I32, {3, 5}};
};

TEST_F(DeviceEmulation, ForwardAndGradientsMatchTheCpu) {
  std::cout << "device: " << gpu->deviceDescription() << "\n";
  EXPECT_EQ(gpu->deviceDescription().rfind(
                driver->describe() + "; matrix products on ", 0),
            0u)
      << gpu->deviceDescription();
  std::vector<Tensor> c, g;
  ASSERT_TRUE(cpu->run("forward", {{"tokens", tokens}}, c));
  Status s = gpu->run("forward", {{"tokens", tokens}}, g);
  ASSERT_TRUE(s) << s.message();
  expectClose(g[0], c[0], "forward logits");
#ifndef KILN_REAL_GPU
  EXPECT_GT(emulated->launches, 20);
  EXPECT_GT(emulated->gemms, 4);
#endif
  // Training mode: the GPU's dropout draws the CPU's mask.
  RunOptions run;
  run.training = true;
  run.seed = 99;
  std::map<std::string, Tensor> in = {{"tokens", tokens}, {"targets", targets}};
  ASSERT_TRUE(cpu->run("loss_grad", in, c, run));
  s = gpu->run("loss_grad", in, g, run);
  ASSERT_TRUE(s) << s.message();
  ASSERT_EQ(g.size(), c.size());
  for (size_t i = 0; i < c.size(); ++i)
    expectClose(g[i], c[i],
                cpu->functions()[2].outputs.size() > i
                    ? "loss_grad result " + std::to_string(i)
                    : "");
}

#ifndef KILN_REAL_GPU
TEST_F(DeviceEmulation, WithoutABlasLibraryProductsRunOnKilnsKernel) {
  auto plain = std::make_shared<EmulatedDriver>();
  plain->withBlas = false;
  ASSERT_TRUE(gpu->useCuda(plain));
  EXPECT_NE(gpu->deviceDescription().find(
                "matrix products on kiln's kernel (no BLAS library)"),
            std::string::npos)
      << gpu->deviceDescription();
  std::vector<Tensor> c, g;
  ASSERT_TRUE(cpu->run("forward", {{"tokens", tokens}}, c));
  Status s = gpu->run("forward", {{"tokens", tokens}}, g);
  ASSERT_TRUE(s) << s.message();
  expectClose(g[0], c[0], "forward logits on kiln_matmul");
  EXPECT_EQ(plain->gemms, 0);
}
#endif

TEST_F(DeviceEmulation, ProfilesTimeEachKernelOnTheDevice) {
  auto profiler = std::make_shared<Profiler>();
  gpu->setProfiler(profiler);
  std::vector<Tensor> out;
  Status s = gpu->run("forward", {{"tokens", tokens}}, out);
  ASSERT_TRUE(s) << s.message();
  gpu->setProfiler(nullptr);
  std::vector<ProfileSlice> slices = profiler->slices();
  size_t kernels = 0, products = 0;
  double previous = 0, call = 0;
  for (const ProfileSlice &p : slices) {
    if (p.kind == ProfileSlice::Kind::Call) {
      call = p.durationUs;
      continue;
    }
    ASSERT_EQ(p.kind, ProfileSlice::Kind::Kernel);
    EXPECT_EQ(p.kernel, static_cast<int>(kernels)) << p.name;
    EXPECT_GE(p.durationUs, 0) << p.name;
    // Stream order, to the precision of CUDA's elapsed times: float
    // milliseconds, whose rounding grows with the time since the profile
    // began (1 us, or a millionth of that time on a slow, loaded machine).
    EXPECT_GE(p.startUs, previous - std::max(1.0, 1e-6 * p.startUs))
        << p.name;
    previous = p.startUs + p.durationUs;
    products += p.name == "Matmul" || p.name == "FusedMatmul";
    EXPECT_NE(p.shapes.find("->"), std::string::npos) << p.name;
    ++kernels;
  }
  EXPECT_GT(products, 4u);
  EXPECT_GT(kernels, products);
  // The kernels' time lies within the call's.
  EXPECT_GT(call, 0);
  EXPECT_LE(previous - slices.front().startUs, call * 1.01 + 1);
  EXPECT_NE(profileSummary(slices).find("FusedMatmul"), std::string::npos);
#ifndef KILN_REAL_GPU
  EXPECT_EQ(emulated->events, 0); // every event freed
#endif
}

TEST_F(DeviceEmulation, ParametersFollowTheHostAndTrainingMatchesTheCpu) {
#ifndef KILN_REAL_GPU
  // Weights go over once, and again only when the host's copy changes.
  std::vector<Tensor> out;
  ASSERT_TRUE(gpu->run("forward", {{"tokens", tokens}}, out));
  size_t once = emulated->uploaded;
  ASSERT_TRUE(gpu->run("forward", {{"tokens", tokens}}, out));
  EXPECT_LT(emulated->uploaded - once, once / 10); // the inputs only
#endif
  // Three AdamW steps (host update, gradients from the GPU) on both.
  TrainConfig config;
  config.lr = 3e-3;
  config.totalSteps = 3;
  config.weightDecay = 0.1;
  std::unique_ptr<Trainer> tc, tg;
  ASSERT_TRUE(Trainer::create(*cpu, config, tc));
  ASSERT_TRUE(Trainer::create(*gpu, config, tg));
  std::map<std::string, Tensor> in = {{"tokens", tokens}, {"targets", targets}};
  for (int step = 0; step < 3; ++step) {
    StepStats sc, sg;
    ASSERT_TRUE(tc->step({in}, sc));
    Status s = tg->step({in}, sg);
    ASSERT_TRUE(s) << s.message();
    EXPECT_NEAR(sg.loss, sc.loss, 1e-4 * std::max(1.0, std::fabs(sc.loss)));
  }
  expectParametersClose(*gpu, *cpu, "after 3 steps");
}

/// Whether every moment of `gpu`'s optimizer state is within 1e-3 (relative,
/// with a floor of 1e-6) of `cpu`'s.
void expectMomentsClose(Model &gpu, Model &cpu) {
  OptimizerState *g = nullptr, *c = nullptr;
  ASSERT_TRUE(gpu.optimizerState(g));
  ASSERT_TRUE(cpu.optimizerState(c));
  ASSERT_EQ(g->m.size(), c->m.size());
  size_t compared = 0;
  for (size_t i = 0; i < c->m.size(); ++i)
    for (int which = 0; which < 2; ++which) {
      const MomentBuffer &a = which ? g->v[i] : g->m[i],
                         &b = which ? c->v[i] : c->m[i];
      ASSERT_EQ(a.size(), b.size()) << "parameter " << i;
      for (size_t j = 0; j < b.size(); ++j, ++compared)
        ASSERT_NEAR(a.data()[j], b.data()[j],
                    1e-3f * std::max(1e-3f, std::fabs(b.data()[j])))
            << (which ? "v" : "m") << " of parameter " << i << ", element "
            << j;
    }
  EXPECT_GT(compared, 1000u);
}

TEST_F(DeviceEmulation, CompiledTrainStepsKeepTheirStateOnTheDevice) {
  // The artifact's train_step (forward, backward, AdamW) on both devices.
  TrainConfig config;
  config.lr = 3e-3;
  config.totalSteps = 3;
  config.compiledStep = true;
  std::unique_ptr<Trainer> tc, tg;
  ASSERT_TRUE(Trainer::create(*cpu, config, tc));
  Status s = Trainer::create(*gpu, config, tg);
  ASSERT_TRUE(s) << s.message();
  std::map<std::string, Tensor> in = {{"tokens", tokens}, {"targets", targets}};
  size_t weights = 0; // the trainable weights' bytes
  for (const ParameterInfo &p : cpu->parameters()) {
    size_t n = p.trainable ? sizeof(float) : 0;
    for (int64_t d : p.shape)
      n *= static_cast<size_t>(d);
    weights += n;
  }
  auto step = [&](const std::string &when) {
    StepStats sc, sg;
    ASSERT_TRUE(tc->step({in}, sc));
    Status s = tg->step({in}, sg);
    ASSERT_TRUE(s) << s.message();
    EXPECT_NEAR(sg.loss, sc.loss, 1e-4 * std::max(1.0, std::fabs(sc.loss)))
        << when;
    EXPECT_NEAR(sg.gradNorm, sc.gradNorm, 1e-4 * std::max(1.0, sc.gradNorm))
        << when;
  };
#ifndef KILN_REAL_GPU
  size_t before = emulated->downloaded;
#endif
  for (int i = 0; i < 2; ++i)
    step("step " + std::to_string(i + 1));
#ifndef KILN_REAL_GPU
  // Only the loss and the norm came back: weights and moments stay.
  EXPECT_LT(emulated->downloaded - before, 64u);
  before = emulated->downloaded;
#endif
  // Reading brings them home.
  expectParametersClose(*gpu, *cpu, "after 2 compiled steps");
  expectMomentsClose(*gpu, *cpu);
#ifndef KILN_REAL_GPU
  EXPECT_GE(emulated->downloaded - before, weights * 3); // w, m and v
  // Read once, they come over again only when written there again.
  before = emulated->downloaded;
  Tensor again;
  ASSERT_TRUE(gpu->parameter(cpu->parameters()[0].name, again));
  EXPECT_EQ(emulated->downloaded, before);
  size_t uploadedBefore = emulated->uploaded;
#endif
  // The host's moments (which the caller may have changed) go back up.
  step("step 3, after the host read the state");
#ifndef KILN_REAL_GPU
  EXPECT_GE(emulated->uploaded - uploadedBefore, weights * 2);
#endif
  // Leaving the GPU brings weights and moments home first.
  ASSERT_TRUE(gpu->useCuda(nullptr));
  expectParametersClose(*gpu, *cpu, "after leaving the GPU");
  expectMomentsClose(*gpu, *cpu);
}

TEST_F(DeviceEmulation, DecodingWithAKeyValueCacheMatchesTheCpu) {
  // A ragged prompt, then single tokens (one row idle once): the caches
  // cross to the GPU and back with every step, the logits match.
  std::unique_ptr<KvCache> onCpu, onGpu;
  ASSERT_TRUE(KvCache::create(*cpu, 2, 16, onCpu));
  ASSERT_TRUE(KvCache::create(*gpu, 2, 16, onGpu));
  for (const std::vector<std::vector<int32_t>> &step :
       std::vector<std::vector<std::vector<int32_t>>>{
           {{1, 2, 3, 4}, {5, 6}}, {{7}, {8}}, {{9}, {}}, {{10}, {11}}}) {
    Tensor c, g;
    ASSERT_TRUE(onCpu->append(*cpu, step, c));
    Status s = onGpu->append(*gpu, step, g);
    ASSERT_TRUE(s) << s.message();
    expectClose(g, c, "decode logits");
  }
  // Positions that skip: the kernel flags the row, the call fails.
  Tensor pos(DType::I32, {2, 2}), len(DType::I32, {2});
  for (int32_t i = 0; i < 4; ++i)
    pos.as<int32_t>()[i] = i == 3 ? 5 : i % 2;
  len.as<int32_t>()[0] = len.as<int32_t>()[1] = 2;
  std::map<std::string, Tensor> in = {{"tokens", Tensor(DType::I32, {2, 2})},
                                      {"positions", pos},
                                      {"lengths", len}};
  for (const ArgInfo &a : KvCache::decodeFunction(*gpu)->inputs)
    if (a.name.rfind("cache.", 0) == 0)
      in[a.name] = Tensor(DType::F32, {2, 4, 40});
  std::fill_n(in["tokens"].as<int32_t>(), 4, 1);
  std::vector<Tensor> out;
  Status s = gpu->run("decode", in, out);
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("'decode' on the CUDA device: decoding row 1: "
                             "its tokens' positions are not consecutive"),
            std::string::npos)
      << s.message();
}

TEST_F(DeviceEmulation, BadInputsAndArtifactsGetClearErrors) {
  // A token id out of range: the kernels flag it, the call fails.
  Tensor bad = tokens;
  bad.as<int32_t>()[7] = 1000;
  std::vector<Tensor> out;
  Status s = gpu->run("forward", {{"tokens", bad}}, out);
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("'forward' on the CUDA device: an index (a "
                             "token or target id) is out of range at "
                             "position 7"),
            std::string::npos)
      << s.message();
  // An artifact without CUDA kernels cannot go to a GPU.
  std::unique_ptr<Model> plain;
  ASSERT_TRUE(Model::load(artifact("gpt2.kart"), plain));
  s = plain->useCuda(driver);
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("has no CUDA kernels; compile it with "
                             "--target=cpu,cuda"),
            std::string::npos)
      << s.message();
  // Back on the CPU, the same model runs there again.
  ASSERT_TRUE(gpu->useCuda(nullptr));
  EXPECT_EQ(gpu->deviceDescription(), "");
  ASSERT_TRUE(gpu->run("forward", {{"tokens", tokens}}, out));
}

} // namespace
