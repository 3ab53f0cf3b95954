//===- ArtifactHooksTest.cpp - what the loader refuses, and frozen params -===//
//
// Artifacts built here with the FlatBuffers object API (no compiler): one
// valid program, then one field at a time set to what a later kiln may
// write — a CUDA kernel, device memory, a backend executable, quantized
// parameter storage, an attention pattern this runtime does not know, a
// wrong attribute table — each refused when it loads with a message that
// names it. And a frozen (not trainable) parameter: the Trainer keeps no
// optimizer state for it and never changes it.
//
//===----------------------------------------------------------------------===//
#include "runtime/Model.h"
#include "runtime/Trainer.h"
#include "runtime/cuda/KernelAbi.h"
#include "runtime/kart_generated.h"

#include <gtest/gtest.h>

#include <cstring>

using namespace kiln;
using namespace kiln::runtime;

namespace {

std::unique_ptr<kart::DimT> dim(int64_t v) {
  auto d = std::make_unique<kart::DimT>();
  d->factor = v;
  return d;
}

std::unique_ptr<kart::ValueT>
value(kart::ValueKind kind, std::vector<int64_t> shape, int index = -1) {
  auto v = std::make_unique<kart::ValueT>();
  v->kind = kind;
  v->dtype = kart::DType::F32;
  for (int64_t d : shape)
    v->shape.push_back(dim(d));
  v->index = index;
  return v;
}

std::unique_ptr<kart::KernelT> kernel(kart::Op op, std::vector<int> in,
                                      std::vector<int> out) {
  auto k = std::make_unique<kart::KernelT>();
  k->op = op;
  k->inputs = std::move(in);
  k->outputs = std::move(out);
  k->location = "hooks.kiln:3:5";
  return k;
}

void addParameter(kart::ProgramT &p, const std::string &name, int64_t n,
                  bool trainable) {
  auto pr = std::make_unique<kart::ParameterT>();
  pr->name = name;
  pr->dtype = kart::DType::F32;
  pr->shape = {n};
  pr->offset = p.weights.size();
  pr->size = n * 4;
  pr->trainable = trainable;
  std::vector<float> init(n, 1.0f);
  const uint8_t *b = reinterpret_cast<const uint8_t *>(init.data());
  p.weights.insert(p.weights.end(), b, b + n * 4);
  p.parameters.push_back(std::move(pr));
}

/// relu(x) for x: f32[4], and a parameter w: f32[4].
kart::ProgramT validProgram() {
  kart::ProgramT p;
  p.version = kFormatVersion;
  p.model = "hooks";
  addParameter(p, "w", 4, true);
  auto fn = std::make_unique<kart::FunctionT>();
  fn->name = "f";
  fn->inputs = {0};
  fn->input_names = {"x"};
  fn->outputs = {1};
  fn->values.push_back(value(kart::ValueKind::Input, {4}, 0));
  fn->values.push_back(value(kart::ValueKind::Intermediate, {4}));
  fn->kernels.push_back(kernel(kart::Op::Relu, {0}, {1}));
  p.functions.push_back(std::move(fn));
  return p;
}

std::vector<uint8_t> bytesOf(const kart::ProgramT &p) {
  flatbuffers::FlatBufferBuilder fbb;
  kart::FinishProgramBuffer(fbb, kart::Program::Pack(fbb, &p));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

Status load(const kart::ProgramT &p, std::unique_ptr<Model> &m) {
  return Model::fromBytes(bytesOf(p), m, ".");
}

/// Loading fails, and the message holds each of `parts`.
void expectRefused(const kart::ProgramT &p,
                   std::initializer_list<const char *> parts) {
  std::unique_ptr<Model> m;
  Status s = load(p, m);
  ASSERT_FALSE(s) << "loaded";
  for (const char *part : parts)
    EXPECT_NE(s.message().find(part), std::string::npos)
        << "'" << part << "' not in: " << s.message();
}

TEST(ArtifactHooks, TheValidProgramLoadsAndRuns) {
  std::unique_ptr<Model> m;
  kart::ProgramT p = validProgram();
  ASSERT_TRUE(load(p, m));
  Tensor x(DType::F32, {4});
  float in[4] = {-1, 2, -3, 4};
  std::memcpy(x.data(), in, sizeof in);
  std::vector<Tensor> out;
  ASSERT_TRUE(m->run("f", {{"x", x}}, out));
  const float *y = out[0].as<float>();
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[1], 2.0f);
  EXPECT_EQ(y[3], 4.0f);
  EXPECT_TRUE(m->parameters()[0].trainable);
}

TEST(ArtifactHooks, OutputNamesAreCheckedAndReported) {
  // Absent (artifacts written before names): result<i>.
  std::unique_ptr<Model> m;
  ASSERT_TRUE(load(validProgram(), m));
  EXPECT_EQ(m->functions()[0].outputs[0].name, "result0");
  kart::ProgramT p = validProgram();
  p.functions[0]->output_names = {"y"};
  ASSERT_TRUE(load(p, m));
  EXPECT_EQ(m->functions()[0].outputs[0].name, "y");
  p.functions[0]->output_names = {"y", "z"};
  expectRefused(p, {"function 'f' has 2 output names for 1 outputs"});
  p.functions[0]->output_names = {""};
  expectRefused(p, {"function 'f' has an empty, overlong or repeated output "
                    "name"});
  p.functions[0]->output_names = {std::string(5000, 'n')};
  expectRefused(p, {"overlong"});
  // Names become file names (kiln run --output-dir): no paths.
  for (const char *bad : {"../escape", "a/b", "..", "a\\b"}) {
    p.functions[0]->output_names = {bad};
    expectRefused(p, {"has an output name that is not a file name"});
  }
  p.functions[0]->output_names = {std::string("a\0b", 3)};
  expectRefused(p, {"not a file name"});
}

TEST(ArtifactHooks, HistoryIsBoundedAndKeptOnSave) {
  kart::ProgramT p = validProgram();
  p.history = {"kiln compile m.kiln -o m.kart"};
  std::unique_ptr<Model> m;
  ASSERT_TRUE(load(p, m));
  ASSERT_EQ(m->history().size(), 1u);
  m->appendHistory("kiln train m.kart: 3 steps");
  std::string path = ::testing::TempDir() + "/history.kart";
  ASSERT_TRUE(m->saveArtifact(path));
  std::unique_ptr<Model> again;
  ASSERT_TRUE(Model::load(path, again));
  EXPECT_EQ(again->history(),
            (std::vector<std::string>{"kiln compile m.kiln -o m.kart",
                                      "kiln train m.kart: 3 steps"}));
  // Past the bound, the oldest training lines give way to new ones; the
  // first line (how it was made) stays.
  for (size_t i = 0; i < kMaxHistory + 5; ++i)
    again->appendHistory("run " + std::to_string(i));
  EXPECT_EQ(again->history().size(), kMaxHistory);
  EXPECT_EQ(again->history().front(), "kiln compile m.kiln -o m.kart");
  EXPECT_EQ(again->history().back(), "run " + std::to_string(kMaxHistory + 4));
  // What an artifact holds is bounded before it is kept.
  p.history.assign(kMaxHistory + 1, "x");
  expectRefused(p, {"the artifact's history has 1001 entries, more than "
                    "1000"});
  p.history = {std::string(kMaxHistoryLine + 1, 'x')};
  expectRefused(p, {"the artifact's history has an entry longer than 16384 "
                    "bytes"});
}

TEST(ArtifactHooks, KernelsOnOtherDevicesAreRefused) {
  kart::ProgramT p = validProgram();
  p.functions[0]->kernels[0]->device = static_cast<kart::Device>(7);
  expectRefused(
      p, {"kernel 0 (Relu)", "hooks.kiln:3:5", "device 7", "does not know"});
  // A CUDA kernel must name the artifact's CUDA executable.
  p.functions[0]->kernels[0]->device = kart::Device::CUDA;
  expectRefused(
      p, {"kernel 0 (Relu)", "CUDA device", "executable -1", "artifact's 0"});
}

TEST(ArtifactHooks, KernelsNamingExecutablesAreRefused) {
  kart::ProgramT p = validProgram();
  p.functions[0]->kernels[0]->executable = 0;
  expectRefused(p, {"backend executable 0"});
}

TEST(ArtifactHooks, ValuesInDeviceMemoryAreRefused) {
  kart::ProgramT p = validProgram();
  p.functions[0]->values[1]->memory_space = kart::MemorySpace::DeviceGlobal;
  expectRefused(p, {"value 1", "memory space DeviceGlobal", "host memory"});
}

TEST(ArtifactHooks, BackendExecutablesAreChecked) {
  kart::ProgramT p = validProgram();
  auto e = std::make_unique<kart::ExecutableT>();
  e->device = kart::Device::CUDA;
  e->format = "fatbin";
  e->data = {1, 2, 3};
  p.executables.push_back(std::move(e));
  expectRefused(p, {"backend executable 0", "CUDA kernel ABI 0", "recompile"});
  p.executables[0]->abi = KILN_CUDA_ABI_VERSION;
  expectRefused(p, {"backend executable 0", "no entry points"});
  p.executables[0]->entries = {"kiln_norm"};
  expectRefused(p, {"block of 0 threads"});
  p.executables[0]->block = 256;
  std::unique_ptr<Model> m;
  Status s = load(p, m);
  ASSERT_TRUE(s) << s.message(); // the CPU runs it, the fatbin aside
  ASSERT_TRUE(m->cudaExecutable());
  EXPECT_FALSE(m->cudaExecutable()->only);
  p.executables[0]->device = static_cast<kart::Device>(9);
  expectRefused(p, {"backend executable 0", "device 9"});
  p.executables[0]->device = kart::Device::CUDA;
  p.executables[0]->format = "ptx";
  expectRefused(p, {"not a fatbin"});
}

/// validProgram() whose parameter w is an int8 matrix [2, 2] (codes
/// 1, -2, 3, -4) with its scales w.scale = [0.5, 2] after it, read by a
/// matmul y = x · wᵀ for x: f32[1, 2].
kart::ProgramT int8Program() {
  kart::ProgramT p = validProgram();
  kart::ParameterT &w = *p.parameters[0];
  w.shape = {2, 2};
  w.size = 4;
  w.trainable = false;
  const int8_t codes[4] = {1, -2, 3, -4};
  std::memcpy(p.weights.data() + w.offset, codes, 4);
  w.storage = std::make_unique<kart::StorageT>();
  w.storage->type = kart::StorageType::Int8;
  w.storage->axis = 0;
  w.storage->scales = 1;
  addParameter(p, "w.scale", 2, false);
  float scales[2] = {0.5f, 2.0f};
  std::memcpy(p.weights.data() + p.parameters[1]->offset, scales, 8);
  kart::FunctionT &f = *p.functions[0];
  f.values[0] = value(kart::ValueKind::Input, {1, 2}, 0);
  f.values[1] = value(kart::ValueKind::Intermediate, {1, 2});
  f.values.push_back(value(kart::ValueKind::Parameter, {2, 2}, 0));
  f.kernels[0] = kernel(kart::Op::Matmul, {0, 2}, {1});
  kart::MatmulAttrsT attrs;
  attrs.transpose_b = true;
  f.kernels[0]->attrs.Set(attrs);
  return p;
}

TEST(ArtifactHooks, QuantizedStorageIsCheckedAndRuns) {
  std::unique_ptr<Model> m;
  kart::ProgramT good = int8Program();
  ASSERT_TRUE(load(good, m));
  // The scales are no parameter of the model's own.
  ASSERT_EQ(m->parameters().size(), 1u);
  Tensor x(DType::F32, {1, 2});
  float in[2] = {1, 1};
  std::memcpy(x.data(), in, sizeof in);
  for (KernelChoice choice : {KernelChoice::Fast, KernelChoice::Reference}) {
    std::vector<Tensor> out;
    RunOptions options;
    options.kernels = choice;
    ASSERT_TRUE(m->run("f", {{"x", x}}, out, options));
    // w = [[0.5, -1], [6, -8]]: rows sum to -0.5 and -2.
    EXPECT_EQ(out[0].as<float>()[0], -0.5f);
    EXPECT_EQ(out[0].as<float>()[1], -2.0f);
  }
  Tensor w;
  ASSERT_TRUE(m->parameter("w", w));
  EXPECT_EQ(w.as<float>()[3], -8.0f);

  auto refused = [](void (*change)(kart::ProgramT &),
                    std::initializer_list<const char *> parts) {
    kart::ProgramT p = int8Program();
    change(p);
    expectRefused(p, parts);
  };
  refused(
      [](kart::ProgramT &p) {
        p.parameters[0]->storage->type = kart::StorageType::BF16;
      },
      {"parameter 0 ('w')", "is stored as BF16", "f32, int8, int4 and nf4"});
  refused([](kart::ProgramT &p) { p.parameters[0]->trainable = true; },
          {"is quantized", "be frozen"});
  refused([](kart::ProgramT &p) { p.parameters[0]->size = 16; },
          {"declares 16 bytes but its shape needs 4"});
  refused([](kart::ProgramT &p) { p.parameters[0]->storage->scales = 7; },
          {"its scales name parameter 7, which is not another parameter"});
  refused(
      [](kart::ProgramT &p) {
        p.parameters[1]->shape = {1};
        p.parameters[1]->size = 4;
      },
      {"its scales ('w.scale') are f32[1]; expected frozen f32[2]"});
  refused(
      [](kart::ProgramT &p) {
        p.functions[0]->kernels[0]->op = kart::Op::Relu;
        p.functions[0]->kernels[0]->attrs.Reset();
        p.functions[0]->kernels[0]->inputs = {2};
        p.functions[0]->values[1] =
            value(kart::ValueKind::Intermediate, {2, 2});
      },
      {"kernel 0 (Relu)", "reads the quantized parameter 'w' as input 0",
       "matmuls (as the right-hand side) and embeddings only"});
  refused(
      [](kart::ProgramT &p) {
        p.functions[0]->values[2]->index = 1;
        p.functions[0]->values[2]->shape.clear();
        p.functions[0]->values[2]->shape.push_back(dim(2));
      },
      {"reads 'w.scale', which holds a quantized weight's scales"});
  kart::ProgramT p = validProgram();
  p.parameters[0]->storage = std::make_unique<kart::StorageT>();
  p.parameters[0]->storage->scales = 0;
  expectRefused(p, {"dense f32 but names quantization"});
  // Dense f32 spelled out is what the absent table means.
  kart::ProgramT dense = validProgram();
  dense.parameters[0]->storage = std::make_unique<kart::StorageT>();
  EXPECT_TRUE(load(dense, m));
}

TEST(ArtifactHooks, UnknownOpsAndWrongAttributesAreRefused) {
  kart::ProgramT p = validProgram();
  p.functions[0]->kernels[0]->op = static_cast<kart::Op>(999);
  expectRefused(p, {"unknown op code 999", "newer kiln"});
  p = validProgram();
  p.functions[0]->kernels[0]->attrs.Set(kart::MatmulAttrsT());
  expectRefused(p, {"(Relu)", "carries attributes MatmulAttrs, not NONE"});
  p = validProgram();
  p.functions[0]->kernels[0]->op = kart::Op::Gelu;
  expectRefused(p, {"(Gelu)", "carries attributes NONE, not GeluAttrs"});
  p.functions[0]->kernels[0]->attrs.Set(kart::GeluAttrsT());
  std::unique_ptr<Model> m;
  EXPECT_TRUE(load(p, m));
  p.functions[0]->kernels[0]->inputs = {-1};
  expectRefused(p, {"input 0 is absent but not optional"});
}

TEST(ArtifactHooks, UnknownAttentionPatternsAreRefused) {
  kart::ProgramT p = validProgram();
  auto &fn = *p.functions[0];
  fn.inputs = {0};
  fn.values[0] = value(kart::ValueKind::Input, {1, 2, 4}, 0);
  fn.values[1] = value(kart::ValueKind::Intermediate, {1, 2, 4});
  fn.kernels[0] = kernel(kart::Op::Attention, {0, 0, 0, -1, -1}, {1});
  kart::AttentionAttrsT a;
  a.heads = 2;
  a.kv_heads = 2;
  a.scale = 0.5;
  a.pattern = std::make_unique<kart::AttentionPatternT>();
  a.pattern->kind = kart::PatternKind::SlidingWindow;
  a.pattern->causal = true;
  a.pattern->window = 4;
  fn.kernels[0]->attrs.Set(a);
  std::unique_ptr<Model> m;
  ASSERT_TRUE(load(p, m));
  kart::AttentionPatternT &pattern =
      *fn.kernels[0]->attrs.AsAttentionAttrs()->pattern;
  pattern.kind = static_cast<kart::PatternKind>(7);
  expectRefused(p, {"(Attention)", "attention pattern kind 7",
                    "dense, sliding_window, block_sparse, strided, fixed"});
  // Parameters are bounded before a kernel sizes anything by them.
  pattern.kind = kart::PatternKind::SlidingWindow;
  pattern.window = 0;
  expectRefused(p, {"(Attention)", "'window' must be positive, got 0"});
  pattern.window = 4;
  pattern.kind = kart::PatternKind::BlockSparse;
  expectRefused(p, {"(Attention)", "block_sparse", "'block' must be between"});
  pattern.window = 0;
  pattern.block = 64;
  pattern.random = 1000000;
  expectRefused(p, {"'random' must be between 0 and 64"});
  pattern.random = 3;
  pattern.block = 96;
  expectRefused(p, {"'block' must be a power of two, got 96"});
  pattern.block = 64;
  ASSERT_TRUE(load(p, m));
}

/// loss(x) = sum(x * w + x * b): gradients x for both w and b.
kart::ProgramT trainableProgram() {
  kart::ProgramT p;
  p.version = kFormatVersion;
  p.model = "frozen";
  addParameter(p, "w", 4, true);
  addParameter(p, "b", 4, false);
  for (std::string name : {"loss", "loss_grad"}) {
    auto fn = std::make_unique<kart::FunctionT>();
    fn->name = name;
    fn->inputs = {0};
    fn->input_names = {"x"};
    fn->values.push_back(value(kart::ValueKind::Input, {4}, 0));
    fn->values.push_back(value(kart::ValueKind::Parameter, {4}, 0));
    fn->values.push_back(value(kart::ValueKind::Parameter, {4}, 1));
    fn->values.push_back(value(kart::ValueKind::Intermediate, {4}));
    fn->values.push_back(value(kart::ValueKind::Intermediate, {4}));
    fn->values.push_back(value(kart::ValueKind::Intermediate, {4}));
    fn->values.push_back(value(kart::ValueKind::Intermediate, {}));
    fn->kernels.push_back(kernel(kart::Op::Mul, {0, 1}, {3}));
    fn->kernels.push_back(kernel(kart::Op::Mul, {0, 2}, {4}));
    fn->kernels.push_back(kernel(kart::Op::Add, {3, 4}, {5}));
    fn->kernels.push_back(kernel(kart::Op::ReduceSum, {5}, {6}));
    kart::ReduceAttrsT sum;
    sum.axes = {0};
    fn->kernels.back()->attrs.Set(sum);
    fn->outputs = {6};
    if (name == "loss_grad") // the loss, then the trainable w's gradient (x)
      fn->outputs = {6, 0};
    p.functions.push_back(std::move(fn));
  }
  return p;
}

TEST(ArtifactHooks, FrozenParametersGetNoOptimizerStateAndStayPut) {
  std::unique_ptr<Model> m;
  ASSERT_TRUE(load(trainableProgram(), m));
  ASSERT_TRUE(m->parameters()[0].trainable);
  ASSERT_FALSE(m->parameters()[1].trainable);
  TrainConfig config;
  config.lr = 0.1;
  config.clipNorm = 0;
  std::unique_ptr<Trainer> t;
  ASSERT_TRUE(Trainer::create(*m, config, t));
  OptimizerState *state = nullptr;
  ASSERT_TRUE(m->optimizerState(state));
  EXPECT_EQ(state->m[0].size(), 4u);
  EXPECT_TRUE(state->m[1].empty());
  EXPECT_TRUE(state->v[1].empty());
  Tensor x(DType::F32, {4});
  for (int i = 0; i < 4; ++i)
    x.as<float>()[i] = 1.0f + i;
  StepStats stats;
  ASSERT_TRUE(t->step({{{"x", x}}}, stats));
  EXPECT_FLOAT_EQ(stats.loss, 2 * (1 + 2 + 3 + 4));
  float *w = nullptr, *b = nullptr;
  ASSERT_TRUE(m->parameterData(0, w));
  ASSERT_TRUE(m->parameterData(1, b));
  for (int i = 0; i < 4; ++i) {
    EXPECT_LT(w[i], 1.0f) << "w moves against x";
    EXPECT_EQ(b[i], 1.0f) << "b is frozen";
  }
}

} // namespace
