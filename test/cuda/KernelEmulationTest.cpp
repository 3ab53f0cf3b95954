//===- KernelEmulationTest.cpp - generated CUDA kernels vs the CPU --------===//
//
// The CUDA source `kiln compile --emit=cuda` generates for
// test/cuda/elementwise.kiln (every elementwise op, broadcast operands), a
// small Llama and a small GPT-2, with their gradients (built by CMake into
// this test, compiled for the host through Emulation.h), launched through
// the CUDA device's own launcher (runtime/cuda/Launch.h) on the operands the
// CPU runtime's kernels see in real `loss_grad` (training: dropout draws)
// and `forward` calls, at sizes that are not multiples of anything (B=3,
// T=5) and on awkward launch shapes (32-thread blocks, at most 3 blocks, so
// kernels loop and blocks are partly idle; and one block of 64). Each
// result must match the CPU's to 1e-5. Op-level tests add what the models do
// not reach: rows wider than a block, ignored and bad targets, the global
// norm and the optimizer updates over several steps.
//
//===----------------------------------------------------------------------===//
#include "test/cuda/Emulation.h"
#include "test/cuda/ReferenceGemm.h"

#include "runtime/Kernels.h"
#include "runtime/KvCache.h"
#include "runtime/Model.h"
#include "runtime/Optimizer.h"
#include "runtime/Random.h"
#include "runtime/core/Device.h"
#include "runtime/core/OpTable.h"
#include "runtime/cuda/Launch.h"
#include "runtime/kart_generated.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <set>

using namespace kiln::runtime;
using kiln::kart::Op;

namespace {

/// Launches into the emulation: the generated file of `model`, host memory
/// for scratch and optimizer moments; with `blas`, matrix products go to
/// cuBLASLt's reference (ReferenceGemm.h) as they would on a GPU with it.
class EmulatedLauncher final : public cuda::Launcher {
public:
  EmulatedLauncher(std::string model, unsigned block, unsigned grid,
                   bool blas = false)
      : model_(std::move(model)), block_(block), grid_(grid), blas_(blas) {}
  bool hasGemm() const override { return blas_; }
  Status gemm(const cuda::GemmCall &call) override {
    ++gemms;
    kilnReferenceGemm(call);
    return Status::ok();
  }
  Status launch(const std::string &entry, unsigned grid, unsigned block,
                const void *args, size_t) override {
    const KilnCudaEntry *k = kiln_emulation::find(model_, entry);
    if (!k)
      return Status::error("no generated kernel '" + entry + "' for " + model_);
    launched.insert(entry);
    kilnLaunch(k->run, args, grid, block);
    return Status::ok();
  }
  void *scratch(size_t bytes) override {
    // Garbage, not zeros: a kernel must not rely on scratch contents.
    scratch_.assign((bytes + 7) / 8, std::nan(""));
    return scratch_.data();
  }
  long long *errorWord() override { return &error; }
  Status upload(void *device, const void *host, size_t bytes) override {
    std::memcpy(device, host, bytes);
    return Status::ok();
  }
  unsigned blockSize() const override { return block_; }
  unsigned maxGrid() const override { return grid_; }
  Status moments(int64_t param, int64_t n, bool adamw, float *&m,
                 float *&v) override {
    std::vector<float> &mm = m_[param], &vv = v_[param];
    if (mm.size() != static_cast<size_t>(n))
      mm.assign(n, 0.0f);
    if (adamw && vv.size() != static_cast<size_t>(n))
      vv.assign(n, 0.0f);
    m = mm.data();
    v = adamw ? vv.data() : nullptr;
    return Status::ok();
  }

  long long error = 0;
  int gemms = 0;
  std::set<std::string> launched;
  std::map<int64_t, std::vector<float>> m_, v_;

private:
  std::string model_;
  unsigned block_, grid_;
  bool blas_;
  std::vector<double> scratch_;
};

/// A tensor's bytes and shape, owned.
struct Buffer {
  std::vector<int64_t> shape;
  DType dtype = DType::F32;
  std::vector<uint8_t> bytes;
  View view() {
    return View{bytes.empty() ? nullptr : bytes.data(), dtype, &shape};
  }
};

Buffer copyOf(const View &v) {
  Buffer b;
  if (!v.data)
    return b;
  b.shape = *v.shape;
  b.dtype = v.dtype;
  const uint8_t *p = static_cast<const uint8_t *>(v.data);
  b.bytes.assign(p, p + v.numel() * dtypeSize(v.dtype));
  return b;
}

/// A result buffer of `v`'s shape, filled with NaN bytes.
Buffer resultLike(const View &v) {
  Buffer b;
  b.shape = *v.shape;
  b.dtype = v.dtype;
  b.bytes.assign(v.numel() * dtypeSize(v.dtype), 0xff);
  return b;
}

/// Every element of `gpu` within 1e-5 (relative above 1) of `cpu`; integers
/// exactly.
void expectClose(const View &gpu, const View &cpu, const std::string &what) {
  ASSERT_EQ(*gpu.shape, *cpu.shape) << what;
  int64_t n = cpu.numel();
  if (cpu.dtype != DType::F32) {
    ASSERT_EQ(std::memcmp(gpu.data, cpu.data, n * dtypeSize(cpu.dtype)), 0)
        << what;
    return;
  }
  const float *g = gpu.as<float>(), *c = cpu.as<float>();
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(c[i])) { // a loss of nothing counted
      ASSERT_TRUE(std::isnan(g[i])) << what << ", element " << i;
      continue;
    }
    if (std::isinf(c[i])) { // the log-sum-exp of a row that sees no key
      ASSERT_EQ(g[i], c[i]) << what << ", element " << i;
      continue;
    }
    ASSERT_NEAR(g[i], c[i], 1e-5f * std::max(1.0f, std::fabs(c[i])))
        << what << ", element " << i << " of " << n;
  }
}

/// Runs kernel `ctx` (its inputs as they were before the CPU ran it, in
/// `before`) through the emulated launcher and compares with the CPU's
/// results in `ctx.out`, and the operands it writes in place (a decoding
/// step's caches) with the CPU's.
void checkKernel(const KernelContext &ctx, const std::vector<Buffer> &before,
                 const std::string &model, const std::string &function,
                 size_t index, EmulatedLauncher &l, const std::string &what) {
  std::vector<Buffer> inputs = before;
  KernelContext g{ctx.kernel, {}, {}, ctx.symbols, ctx.primitives};
  g.training = ctx.training;
  g.seed = ctx.seed;
  g.paramIndex = ctx.paramIndex;
  g.paramFrozen = ctx.paramFrozen;
  for (Buffer &b : inputs)
    g.in.push_back(b.view());
  for (size_t i = 0; i < g.in.size(); ++i)
    g.in[i].quant = ctx.in[i].quant;
  std::vector<Buffer> results;
  for (const View &v : ctx.out)
    results.push_back(resultLike(v));
  for (Buffer &b : results)
    g.out.push_back(b.view());
  l.error = 0;
  Status s = cuda::launchKernel(g, model, function, index, l);
  ASSERT_TRUE(s) << what << ": " << s.message();
  EXPECT_EQ(l.error, 0) << what;
  for (size_t i = 0; i < ctx.out.size(); ++i)
    expectClose(g.out[i], ctx.out[i], what + ", result " + std::to_string(i));
  for (size_t i = 0; i < ctx.in.size(); ++i)
    if (writtenInputs(ctx.kernel.op()) >> i & 1)
      expectClose(g.in[i], ctx.in[i],
                  what + ", operand " + std::to_string(i) +
                      " written in place");
}

std::string locationOf(const kiln::kart::Kernel &k) {
  return k.location() ? k.location()->str() : std::string();
}

class Emulated : public ::testing::TestWithParam<std::string> {};

TEST_P(Emulated, KernelsMatchTheCpu) {
  std::unique_ptr<Model> model;
  std::string path =
      std::string(KILN_CUDA_TEST_DIR) + "/" + GetParam() + ".kart";
  Status s = Model::load(path, model);
  ASSERT_TRUE(s) << s.message();
  int64_t vocab = model->vocabSize();
  ASSERT_GT(vocab, 0);
  // Inputs from each function's signature, at sizes that are multiples of
  // nothing: B=3, T=5, S=7; token ids, a mask with padding, labels with
  // ignored positions.
  SplitMix64 rng{7};
  auto inputsOf = [&](const std::string &function) {
    std::map<std::string, Tensor> in;
    for (const FunctionInfo &f : model->functions()) {
      if (f.name != function)
        continue;
      for (const ArgInfo &a : f.inputs) {
        std::vector<int64_t> shape;
        for (const std::string &d : a.dims)
          shape.push_back(d == "B"   ? 3
                          : d == "S" ? 7
                          : d == "T" ? 5
                                     : std::stoll(d));
        Tensor t(a.dtype, shape);
        for (int64_t i = 0; i < t.numel(); ++i) {
          int32_t v = static_cast<int32_t>(rng.next() % vocab);
          if (a.name == "attention_mask")
            v = i % 7 < 5 || i < 7; // row 0 whole, the others padded
          if (a.name == "labels" && i % 4 == 3)
            v = -100;
          t.as<int32_t>()[i] = v;
        }
        in[a.name] = std::move(t);
      }
    }
    return in;
  };
  std::map<std::string, int> checked; // by op
  std::set<std::string> unsupported;
  EmulatedLauncher wide(model->modelName(), 32, 3),
      single(model->modelName(), 64, 1), blas(model->modelName(), 32, 3, true);
  // Each function's kernels as the CPU runs them in `call` (given the run
  // options with the checking hooks).
  auto checkCalls = [&](const std::string &function, bool training,
                        const std::function<Status(const RunOptions &)> &call) {
    int index = -1;
    std::vector<Buffer> inputs;
    RunOptions run;
    run.training = training;
    run.seed = 1234;
    run.beforeKernel = [&](const KernelContext &ctx) {
      ++index;
      inputs.clear();
      for (const View &v : ctx.in)
        inputs.push_back(copyOf(v));
    };
    run.afterKernel = [&](const KernelContext &ctx) {
      std::string op = kiln::kart::EnumNameOp(ctx.kernel.op());
      if (!cuda::unsupportedReason(ctx.kernel).empty()) {
        unsupported.insert(op);
        return;
      }
      std::string what = GetParam() + " " + function + " kernel " +
                         std::to_string(index) + " (" + op + ", " +
                         locationOf(ctx.kernel) + ")";
      bool product =
          ctx.kernel.op() == Op::Matmul || ctx.kernel.op() == Op::FusedMatmul;
      for (EmulatedLauncher *l : {&wide, &single, &blas}) {
        if (l == &blas && !product)
          continue;
        checkKernel(ctx, inputs, model->modelName(), function, index, *l,
                    what + " on " + std::to_string(l->blockSize()) + "x" +
                        std::to_string(l->maxGrid()) +
                        (l == &blas ? " with cuBLASLt" : ""));
        if (::testing::Test::HasFatalFailure())
          return;
      }
      ++checked[op];
    };
    Status st = call(run);
    ASSERT_TRUE(st) << function << ": " << st.message();
  };
  for (const char *function : {"loss_grad", "forward"}) {
    checkCalls(function, std::string(function) == "loss_grad",
               [&](const RunOptions &run) {
                 std::vector<Tensor> out;
                 return model->run(function, inputsOf(function), out, run);
               });
    if (HasFatalFailure())
      return;
  }
  // Decoding (causal decoders, and T5's decoder against its source): a
  // ragged prompt into empty caches, then single tokens at different
  // positions per row, one row idle.
  if (KvCache::decodeFunction(*model)) {
    std::unique_ptr<KvCache> cache;
    ASSERT_TRUE(KvCache::create(*model, 3, 7, cache));
    if (!cache->contextInputs().empty()) {
      std::map<std::string, Tensor> source = inputsOf("forward");
      std::map<std::string, Tensor> context;
      for (const std::string &n : cache->contextInputs())
        context[n] = source.at(n);
      checkCalls("prepare", false, [&](const RunOptions &run) {
        return cache->setContext(*model, context, run);
      });
    }
    Tensor logits;
    for (const std::vector<std::vector<int32_t>> &tokens :
         std::vector<std::vector<std::vector<int32_t>>>{
             {{1, 5, 9}, {2}, {3, 4}}, {{6}, {}, {8}}}) {
      checkCalls("decode", false, [&](const RunOptions &run) {
        return cache->append(*model, tokens, logits, run);
      });
      if (HasFatalFailure())
        return;
    }
  }
  std::string summary;
  for (const auto &[op, n] : checked)
    summary += " " + op + "x" + std::to_string(n);
  std::cout << GetParam() << ": checked" << summary << "\n";
  if (checked.count("Matmul") || checked.count("FusedMatmul")) {
    EXPECT_GT(blas.gemms, 0) << "no product went to the BLAS library";
  }
  // Every kernel of these models runs on the CUDA device.
  for (const std::string &op : unsupported)
    ADD_FAILURE() << op << " has no CUDA kernel";
  EXPECT_GT(checked.size(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Models, Emulated,
                         ::testing::Values("elementwise", "llama", "gpt2",
                                           "t5"));

//===----------------------------------------------------------------------===//
// Single ops at sizes the small models do not reach
//===----------------------------------------------------------------------===//

/// One kernel of `op`, as an artifact would hold it.
struct OneKernel {
  flatbuffers::FlatBufferBuilder fbb;
  const kiln::kart::Kernel *kernel;
  OneKernel(Op op, size_t inputs, size_t outputs,
            kiln::kart::AttrsUnion attrs = {}, std::set<size_t> absent = {}) {
    kiln::kart::KernelT k;
    k.op = op;
    for (size_t i = 0; i < inputs; ++i)
      k.inputs.push_back(absent.count(i) ? -1 : static_cast<int>(i));
    for (size_t i = 0; i < outputs; ++i)
      k.outputs.push_back(static_cast<int>(inputs + i));
    k.attrs = std::move(attrs);
    k.location = "ops.kiln:1:1";
    fbb.Finish(kiln::kart::Kernel::Pack(fbb, &k));
    kernel = flatbuffers::GetRoot<kiln::kart::Kernel>(fbb.GetBufferPointer());
  }
};

template <typename T> kiln::kart::AttrsUnion attrs(T table) {
  kiln::kart::AttrsUnion u;
  u.Set(std::move(table));
  return u;
}

Buffer randomF32(std::vector<int64_t> shape, uint64_t seed, float lo = -2,
                 float hi = 2) {
  Buffer b;
  b.shape = std::move(shape);
  int64_t n = 1;
  for (int64_t d : b.shape)
    n *= d;
  b.bytes.resize(n * 4);
  SplitMix64 r{seed};
  float *f = reinterpret_cast<float *>(b.bytes.data());
  for (int64_t i = 0; i < n; ++i)
    f[i] = lo + static_cast<float>(r.uniform()) * (hi - lo);
  return b;
}

template <typename T>
Buffer integers(std::vector<int64_t> shape, std::vector<T> values) {
  Buffer b;
  b.shape = std::move(shape);
  b.dtype = sizeof(T) == 8 ? DType::I64 : DType::I32;
  b.bytes.resize(values.size() * sizeof(T));
  std::memcpy(b.bytes.data(), values.data(), b.bytes.size());
  return b;
}

/// Runs `k` on `inputs` with the CPU's reference kernel into results of
/// `outShapes`, then through the emulated launchers (two launch shapes,
/// and with cuBLASLt's reference); compares. Returns the CPU's status (a
/// bad input fails it) and leaves the launcher's error word in `error`
/// and the launcher with cuBLASLt in `blas`.
Status compareOp(const OneKernel &k, std::vector<Buffer> inputs,
                 const std::vector<std::vector<int64_t>> &outShapes,
                 long long *error = nullptr, EmulatedLauncher *blas = nullptr) {
  PrimitiveCache primitives;
  std::vector<int64_t> symbols;
  std::vector<Buffer> cpuIn = inputs, cpuOut;
  KernelContext ctx{*k.kernel, {}, {}, symbols, primitives};
  for (Buffer &b : cpuIn)
    ctx.in.push_back(b.view());
  for (const auto &s : outShapes) {
    Buffer b;
    b.shape = s;
    b.dtype = inputs[0].dtype; // f32, or a moved integer tensor's type
    int64_t n = 1;
    for (int64_t d : s)
      n *= d;
    b.bytes.assign(n * 4, 0xff);
    cpuOut.push_back(std::move(b));
  }
  for (Buffer &b : cpuOut)
    ctx.out.push_back(b.view());
  Status s = cpuDevice().kernel(k.kernel->op())->reference(ctx);
  std::string what = std::string(kiln::kart::EnumNameOp(k.kernel->op()));
  for (EmulatedLauncher l :
       {EmulatedLauncher("gpt2", 32, 3), EmulatedLauncher("gpt2", 64, 1),
        EmulatedLauncher("gpt2", 32, 3, true)}) {
    if (!s) { // the CPU refused: the GPU flags the same position
      KernelContext g{*k.kernel, {}, {}, symbols, primitives};
      std::vector<Buffer> in = inputs, out = cpuOut;
      for (Buffer &b : in)
        g.in.push_back(b.view());
      for (Buffer &b : out)
        g.out.push_back(b.view());
      EXPECT_TRUE(cuda::launchKernel(g, "gpt2", "f", 0, l)) << what;
      if (error)
        *error = l.error;
      continue;
    }
    std::vector<Buffer> in = inputs;
    checkKernel(ctx, in, "gpt2", "f", 0, l,
                what + (l.hasGemm() ? " with cuBLASLt" : ""));
    if (l.hasGemm() && blas)
      *blas = l;
  }
  return s;
}

TEST(EmulatedOps, NormsOfRowsWiderThanABlock) {
  const int64_t rows = 7, C = 1000;
  kiln::kart::NormAttrsT eps;
  eps.eps = 1e-5;
  EXPECT_TRUE(
      compareOp(OneKernel(Op::LayerNorm, 3, 1, attrs(eps)),
                {randomF32({rows, C}, 1), randomF32({C}, 2), randomF32({C}, 3)},
                {{rows, C}}));
  EXPECT_TRUE(compareOp(OneKernel(Op::RMSNorm, 2, 1, attrs(eps)),
                        {randomF32({rows, C}, 4), randomF32({C}, 5)},
                        {{rows, C}}));
  for (auto kind :
       {kiln::kart::NormKind::LayerNorm, kiln::kart::NormKind::RMSNorm}) {
    kiln::kart::FusedNormAttrsT f;
    f.kind = kind;
    f.eps = 1e-5;
    EXPECT_TRUE(compareOp(OneKernel(Op::AddNorm, 4, 2, attrs(f)),
                          {randomF32({rows, C}, 6), randomF32({rows, C}, 7),
                           randomF32({C}, 8), randomF32({C}, 9)},
                          {{rows, C}, {rows, C}}));
    EXPECT_TRUE(compareOp(OneKernel(Op::NormGrad, 3, 3, attrs(f)),
                          {randomF32({rows, C}, 10), randomF32({rows, C}, 11),
                           randomF32({C}, 12)},
                          {{rows, C}, {C}, {C}}));
  }
}

TEST(EmulatedOps, CrossEntropyIgnoresAndFlagsTargets) {
  const int64_t rows = 9, V = 1000;
  kiln::kart::CrossEntropyAttrsT ce;
  ce.ignore_index = -100;
  std::vector<int64_t> t = {3, -100, 999, 0, 500, -100, 7, 998, 1};
  for (bool wide : {false, true}) {
    Buffer targets =
        wide ? integers<int64_t>({rows}, t)
             : integers<int32_t>({rows},
                                 std::vector<int32_t>(t.begin(), t.end()));
    EXPECT_TRUE(compareOp(
        OneKernel(Op::SoftmaxCrossEntropy, 3, 2, attrs(ce)),
        {randomF32({rows, V}, 20, -8, 8), targets, randomF32({}, 21, 0.5, 2)},
        {{}, {rows, V}}));
    EXPECT_TRUE(compareOp(OneKernel(Op::CrossEntropy, 2, 1, attrs(ce)),
                          {randomF32({rows, V}, 22, -8, 8), targets}, {{}}));
    EXPECT_TRUE(compareOp(
        OneKernel(Op::CrossEntropyGrad, 3, 1, attrs(ce)),
        {randomF32({rows, V}, 23, -8, 8), targets, randomF32({}, 24, 0.5, 2)},
        {{rows, V}}));
  }
  // Every target ignored: the CPU's NaN loss, zero gradients.
  EXPECT_TRUE(
      compareOp(OneKernel(Op::SoftmaxCrossEntropy, 3, 2, attrs(ce)),
                {randomF32({2, V}, 25), integers<int32_t>({2}, {-100, -100}),
                 randomF32({}, 26)},
                {{}, {2, V}}));
  // A target out of range: the CPU refuses, the GPU kernels flag it.
  long long error = 0;
  EXPECT_FALSE(compareOp(OneKernel(Op::SoftmaxCrossEntropy, 3, 2, attrs(ce)),
                         {randomF32({3, V}, 27),
                          integers<int32_t>({3}, {1, V, 2}), randomF32({}, 28)},
                         {{}, {3, V}}, &error));
  EXPECT_EQ(error, 2); // position 1, plus one
  error = 0;
  EXPECT_FALSE(
      compareOp(OneKernel(Op::Embedding, 2, 1),
                {randomF32({5, 3}, 29), integers<int32_t>({4}, {0, 4, -1, 2})},
                {{4, 3}}, &error));
  EXPECT_EQ(error, 3);
}

TEST(EmulatedOps, CopiesAndReductionsOverAnyAxes) {
  const std::vector<int64_t> shape = {3, 5, 7, 2};
  kiln::kart::TransposeAttrsT t;
  t.perm = {2, 0, 3, 1};
  EXPECT_TRUE(compareOp(OneKernel(Op::Transpose, 1, 1, attrs(t)),
                        {randomF32(shape, 100)}, {{7, 3, 2, 5}}));
  for (Op op : {Op::ReduceSum, Op::ReduceMean, Op::ReduceMax}) {
    kiln::kart::ReduceAttrsT r;
    r.axes = {0, -2}; // not one block of axes
    r.keepdim = op == Op::ReduceMax;
    EXPECT_TRUE(compareOp(OneKernel(op, 1, 1, attrs(r)),
                          {randomF32(shape, 101)},
                          {r.keepdim ? std::vector<int64_t>{1, 5, 1, 2}
                                     : std::vector<int64_t>{5, 2}}));
  }
  for (auto kind :
       {kiln::kart::ReduceKind::Sum, kiln::kart::ReduceKind::Mean}) {
    kiln::kart::ReduceGradAttrsT r;
    r.kind = kind;
    r.axes = {1, 3};
    EXPECT_TRUE(compareOp(OneKernel(Op::ReduceGrad, 2, 1, attrs(r)),
                          {randomF32({3, 7}, 102), randomF32(shape, 103)},
                          {shape}));
  }
  kiln::kart::SliceGradAttrsT sg;
  sg.axis = 2;
  sg.start = 3;
  EXPECT_TRUE(compareOp(OneKernel(Op::SliceGrad, 2, 1, attrs(sg)),
                        {randomF32({3, 5, 2, 2}, 104), randomF32(shape, 105)},
                        {shape}));
  EXPECT_TRUE(compareOp(OneKernel(Op::ZerosLike, 1, 1), {randomF32(shape, 106)},
                        {shape}));
  // An integer tensor moves bit for bit.
  kiln::kart::ReshapeAttrsT reshape;
  EXPECT_TRUE(compareOp(OneKernel(Op::Reshape, 1, 1, attrs(reshape)),
                        {integers<int32_t>({2, 3}, {1, -2, 3, 1 << 30, 5, 6})},
                        {{6}}));
}

TEST(EmulatedOps, MatrixProductsWithEpilogues) {
  // Each case also runs with cuBLASLt's reference: how many library calls
  // it takes and whether kiln's epilogue kernel finishes the product.
  auto product = [](const OneKernel &k, std::vector<Buffer> in,
                    std::vector<int64_t> out, int gemms, bool epilogue) {
    EmulatedLauncher blas("gpt2", 32, 3, true);
    EXPECT_TRUE(compareOp(k, std::move(in), {std::move(out)}, nullptr, &blas));
    EXPECT_EQ(blas.gemms, gemms);
    EXPECT_EQ(blas.launched.count("kiln_matmul_epilogue"), epilogue ? 1u : 0u);
    EXPECT_EQ(blas.launched.count("kiln_matmul"), 0u);
  };
  // Several 64 x 64 tiles, the last ones partial; a transposed; every
  // epilogue at once (GELU and the residual after it: kiln's epilogue).
  kiln::kart::FusedMatmulAttrsT f;
  f.transpose_a = true;
  f.scale = 0.5;
  f.activation = kiln::kart::Activation::GeluTanh;
  product(OneKernel(Op::FusedMatmul, 4, 1, attrs(f)),
          {randomF32({33, 70}, 110), randomF32({33, 130}, 111),
           randomF32({130}, 112), randomF32({70, 130}, 113)},
          {70, 130}, 1, true);
  // A linear layer over a batch: one product of B x T rows, the bias and
  // the residual fused into the library call.
  kiln::kart::FusedMatmulAttrsT lin;
  product(OneKernel(Op::FusedMatmul, 4, 1, attrs(lin)),
          {randomF32({3, 5, 7}, 120), randomF32({7, 9}, 121),
           randomF32({9}, 122), randomF32({3, 5, 9}, 123)},
          {3, 5, 9}, 1, false);
  // ReLU with a bias, b transposed: fused; scaled without a bias: fused.
  kiln::kart::FusedMatmulAttrsT relu;
  relu.transpose_b = true;
  relu.activation = kiln::kart::Activation::Relu;
  product(OneKernel(Op::FusedMatmul, 4, 1, attrs(relu), {3}),
          {randomF32({2, 6, 7}, 124), randomF32({11, 7}, 125),
           randomF32({11}, 126), Buffer{}},
          {2, 6, 11}, 1, false);
  kiln::kart::FusedMatmulAttrsT scaled;
  scaled.scale = 0.125;
  product(OneKernel(Op::FusedMatmul, 4, 1, attrs(scaled), {2}),
          {randomF32({4, 3, 6}, 127), randomF32({4, 6, 5}, 128), Buffer{},
           randomF32({4, 3, 5}, 129)},
          {4, 3, 5}, 1, false);
  // ... but a scaled bias or SiLU need the epilogue kernel.
  kiln::kart::FusedMatmulAttrsT silu;
  silu.activation = kiln::kart::Activation::Silu;
  product(OneKernel(Op::FusedMatmul, 4, 1, attrs(silu), {3}),
          {randomF32({5, 7}, 130), randomF32({7, 4}, 131), randomF32({4}, 132),
           Buffer{}},
          {5, 4}, 1, true);
  // Broadcast batches, b transposed: [2, 1] x [3] batches are not one
  // strided run, so one call per outer batch (3 products each).
  kiln::kart::MatmulAttrsT m;
  m.transpose_b = true;
  product(OneKernel(Op::Matmul, 2, 1, attrs(m)),
          {randomF32({2, 1, 5, 7}, 114), randomF32({3, 9, 7}, 115)},
          {2, 3, 5, 9}, 2, false);
  // Attention-like batches: [2, 3] on both sides collapse into one call.
  kiln::kart::MatmulAttrsT qk;
  qk.transpose_b = true;
  product(OneKernel(Op::Matmul, 2, 1, attrs(qk)),
          {randomF32({2, 3, 5, 4}, 133), randomF32({2, 3, 6, 4}, 134)},
          {2, 3, 5, 6}, 1, false);
  // A weight gradient: the batches summed into one product, no bias;
  // stacked along K into one call.
  kiln::kart::FusedMatmulAttrsT w;
  w.transpose_a = true;
  w.reduce_batch = true;
  product(OneKernel(Op::FusedMatmul, 4, 1, attrs(w), {2, 3}),
          {randomF32({4, 6, 5}, 116), randomF32({4, 6, 9}, 117), Buffer{},
           Buffer{}},
          {5, 9}, 1, false);
  // Summed batches that do not stack: one call each, accumulating.
  kiln::kart::FusedMatmulAttrsT acc;
  acc.transpose_b = true;
  acc.reduce_batch = true;
  product(OneKernel(Op::FusedMatmul, 4, 1, attrs(acc), {2, 3}),
          {randomF32({4, 6, 5}, 135), randomF32({4, 9, 5}, 136), Buffer{},
           Buffer{}},
          {6, 9}, 4, false);
}

/// Causal attention's attributes: `H` query heads over `Hkv` key/value
/// heads, scores scaled by `scale`.
kiln::kart::AttentionAttrsT causalAttention(int64_t H, int64_t Hkv,
                                            double scale) {
  kiln::kart::AttentionAttrsT at;
  at.heads = H;
  at.kv_heads = Hkv;
  at.scale = scale;
  at.pattern = std::make_unique<kiln::kart::AttentionPatternT>();
  at.pattern->causal = true;
  return at;
}

TEST(EmulatedOps, AttentionWithAKeyMaskAndFewerQueries) {
  // Causal with Tq < Tk (the queries are the last 3 positions), grouped
  // heads (4 query heads on 2), keys masked per batch row, one row of
  // batch 1 seeing no key at all.
  const int64_t B = 2, Tq = 3, Tk = 7, H = 4, Hkv = 2, D = 8;
  kiln::kart::AttentionAttrsT at = causalAttention(H, Hkv, 0.35);
  Buffer q = randomF32({B, Tq, H * D}, 120),
         k = randomF32({B, Tk, Hkv * D}, 121),
         v = randomF32({B, Tk, Hkv * D}, 122);
  Buffer mask = integers<int32_t>({B, Tk}, {1, 1, 0, 1, 1, 1, 1, //
                                            0, 0, 0, 0, 0, 1, 1});
  EXPECT_TRUE(compareOp(OneKernel(Op::Attention, 5, 2, attrs(at), {4}),
                        {q, k, v, mask, Buffer{}},
                        {{B, Tq, H * D}, {B, H, Tq}}));
  // The gradient takes the forward's results: the CPU's.
  OneKernel fwd(Op::Attention, 5, 2, attrs(at), {4});
  PrimitiveCache primitives;
  std::vector<int64_t> symbols;
  KernelContext ctx{*fwd.kernel, {}, {}, symbols, primitives};
  Buffer o = randomF32({B, Tq, H * D}, 0), lse = randomF32({B, H, Tq}, 0);
  ctx.in = {q.view(), k.view(), v.view(), mask.view(), View{}};
  ctx.out = {o.view(), lse.view()};
  ASSERT_TRUE(cpuDevice().kernel(Op::Attention)->reference(ctx));
  EXPECT_TRUE(compareOp(
      OneKernel(Op::AttentionGrad, 8, 3, attrs(at), {7}),
      {randomF32({B, Tq, H * D}, 123), q, k, v, o, lse, mask, Buffer{}},
      {{B, Tq, H * D}, {B, Tk, Hkv * D}, {B, Tk, Hkv * D}}));
}

TEST(EmulatedOps, CachedAttentionRollingWindowsBiasesAndBadRows) {
  // A sliding window of 4 over a cache of 4 slots (it rolls): row 0 adds
  // positions 5..7, so its first query reads the slot its last token
  // overwrites; row 1 adds 2 tokens and a padding one. Grouped heads.
  const int64_t B = 2, T = 3, S = 4, H = 4, Hkv = 2, D = 8;
  kiln::kart::AttentionAttrsT at = causalAttention(H, Hkv, 0.3);
  at.pattern->kind = kiln::kart::PatternKind::SlidingWindow;
  at.pattern->window = 4;
  auto operands = [&](int64_t S, std::vector<int32_t> pos,
                      std::vector<int32_t> len) {
    return std::vector<Buffer>{
        randomF32({B, T, H * D}, 140),   randomF32({B, T, Hkv * D}, 141),
        randomF32({B, T, Hkv * D}, 142), randomF32({B, S, Hkv * D}, 143),
        randomF32({B, S, Hkv * D}, 144), integers<int32_t>({B, T}, pos),
        integers<int32_t>({B}, len)};
  };
  EXPECT_TRUE(compareOp(OneKernel(Op::CachedAttention, 7, 1, attrs(at)),
                        operands(S, {5, 6, 7, 2, 3, 3}, {3, 2}),
                        {{B, T, H * D}}));
  // T5's relative position bias, a cache that does not roll.
  kiln::kart::AttentionAttrsT rel;
  rel.heads = H;
  rel.kv_heads = Hkv;
  rel.scale = 1.0;
  rel.pattern = std::make_unique<kiln::kart::AttentionPatternT>();
  rel.pattern->causal = true;
  rel.relative = std::make_unique<kiln::kart::RelativePositionBucketAttrsT>();
  rel.relative->buckets = 8;
  rel.relative->max_distance = 16;
  std::vector<Buffer> in = operands(20, {14, 15, 16, 0, 0, 0}, {3, 1});
  in.push_back(randomF32({8, H}, 145));
  EXPECT_TRUE(compareOp(OneKernel(Op::CachedAttention, 8, 1, attrs(rel)), in,
                        {{B, T, H * D}}));
  // A row whose positions skip, or which runs past the cache: the CPU
  // refuses the step, the GPU flags the row (as -(row + 1)).
  for (auto [pos, len, row] :
       {std::tuple<std::vector<int32_t>, std::vector<int32_t>, long long>{
            {0, 1, 2, 4, 6, 6}, {3, 2}, 1},
        {{2, 3, 4, 0, 1, 2}, {3, 3}, 0}}) {
    long long error = 0;
    kiln::kart::AttentionAttrsT dense;
    dense.heads = H;
    dense.kv_heads = Hkv;
    dense.scale = 0.3;
    dense.pattern = std::make_unique<kiln::kart::AttentionPatternT>();
    dense.pattern->causal = true;
    EXPECT_FALSE(compareOp(OneKernel(Op::CachedAttention, 7, 1, attrs(dense)),
                           operands(S, pos, len), {{B, T, H * D}}, &error));
    EXPECT_EQ(error, -(row + 1));
  }
}

TEST(EmulatedOps, GlobalNormOfUnevenTensors) {
  std::vector<Buffer> in;
  std::vector<int64_t> sizes = {1, 31, 1000, 4097, 33};
  for (size_t i = 0; i < sizes.size(); ++i)
    in.push_back(randomF32({sizes[i]}, 40 + i));
  EXPECT_TRUE(compareOp(OneKernel(Op::GlobalNorm, in.size(), 1), in, {{}}));
}

TEST(EmulatedOps, OptimizerStepsMatchTheCpu) {
  for (auto kind :
       {kiln::kart::OptimizerKind::AdamW, kiln::kart::OptimizerKind::SGD}) {
    kiln::kart::OptimizerAttrsT o;
    o.kind = kind;
    o.beta1 = 0.9;
    o.beta2 = 0.95;
    o.eps = 1e-8;
    o.weight_decay = 0.1;
    o.momentum = 0.9;
    o.max_norm = 1.0;
    OneKernel k(Op::OptimizerUpdate, 5, 0, attrs(o));
    const int64_t n = 1001;
    Buffer cpuP = randomF32({n}, 50), gpuP = cpuP;
    OptimizerState state;
    EmulatedLauncher l("gpt2", 32, 3);
    PrimitiveCache primitives;
    std::vector<int64_t> symbols;
    for (int step = 1; step <= 3; ++step) {
      Buffer g = randomF32({n}, 60 + step), lr = randomF32({}, 70, 1e-3, 1e-2);
      // The global norm clips on step 2 only.
      Buffer norm =
          randomF32({}, 80, step == 2 ? 3.0f : 0.2f, step == 2 ? 3.0f : 0.2f);
      Buffer at = randomF32({}, 90, step, step);
      for (bool gpu : {false, true}) {
        KernelContext ctx{*k.kernel, {}, {}, symbols, primitives};
        ctx.in = {gpu ? gpuP.view() : cpuP.view(), g.view(), norm.view(),
                  lr.view(), at.view()};
        ctx.paramIndex = 0;
        Status s;
        if (gpu) {
          s = cuda::launchKernel(ctx, "gpt2", "f", 0, l);
        } else {
          ctx.optimizer = &state;
          s = cpuDevice().kernel(Op::OptimizerUpdate)->reference(ctx);
        }
        ASSERT_TRUE(s) << s.message();
      }
      std::string what = std::string(kiln::kart::EnumNameOptimizerKind(kind)) +
                         " step " + std::to_string(step);
      std::vector<int64_t> shape = {n};
      expectClose(gpuP.view(), cpuP.view(), what + ", parameter");
      View cm{state.m[0].data(), DType::F32, &shape},
          gm{l.m_[0].data(), DType::F32, &shape};
      expectClose(gm, cm, what + ", first moment");
      if (kind == kiln::kart::OptimizerKind::AdamW) {
        View cv{state.v[0].data(), DType::F32, &shape},
            gv{l.v_[0].data(), DType::F32, &shape};
        expectClose(gv, cv, what + ", second moment");
      }
    }
  }
}

} // namespace
