//===- ElementwiseEmulationTest.cpp - generated CUDA kernels vs the CPU ---===//
//
// The CUDA kernels `kiln compile --emit=cuda` generates for
// test/cuda/elementwise.kiln (every elementwise op, broadcast operands) and
// a small Llama, with their gradients (built by CMake into this test,
// compiled for the host through Emulation.h), run on the operands the CPU
// runtime's own kernels see in real `loss_grad` and `forward` calls —
// forward and backward, at sizes that are not multiples of anything (B=3,
// T=5) — and on awkward grids (3 blocks of 32 threads, so threads loop and
// the last block is partly idle; and one block). Each must match the CPU's
// result to 1e-5. (GPT-2's elementwise work all fuses into matmul epilogues
// and norms, which later parts of the CUDA backend generate.)
//
//===----------------------------------------------------------------------===//
#include "test/cuda/Emulation.h"

#include "runtime/Kernels.h"
#include "runtime/Model.h"
#include "runtime/Random.h"
#include "runtime/kart_generated.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

using namespace kiln::runtime;

namespace {

/// The call of kernel `k` on `ctx`'s operands, in the generated kernels'
/// terms: each operand's element strides along the result's dimensions
/// (NumPy broadcasting: aligned at the last dimension, 0 where it
/// broadcasts).
KilnEmulatedCall callOf(const KernelContext &ctx, std::vector<float> &out) {
  KilnEmulatedCall c{};
  const std::vector<int64_t> &shape = *ctx.out[0].shape;
  c.rank = static_cast<int>(shape.size());
  c.total = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    c.dims[d] = shape[d];
    c.total *= shape[d];
  }
  c.nin = static_cast<int>(ctx.in.size());
  for (int i = 0; i < c.nin; ++i) {
    const View &v = ctx.in[i];
    const std::vector<int64_t> &s = *v.shape;
    c.in[i] = v.as<float>();
    int64_t stride = 1;
    for (int d = static_cast<int>(s.size()) - 1; d >= 0; --d) {
      int od = c.rank - (static_cast<int>(s.size()) - d);
      c.strides[i][od] = s[d] == 1 ? 0 : stride;
      stride *= s[d];
    }
    c.contiguous[i] = v.numel() == c.total;
  }
  out.assign(static_cast<size_t>(c.total), NAN);
  c.out = out.data();
  return c;
}

/// Runs a generated norm kernel on the CPU kernel's operands and compares.
void checkNorm(const kiln_emulation::Kernel &k, const KernelContext &ctx,
               const std::string &what) {
  bool centered = ctx.kernel.op() == kiln::kart::Op::LayerNorm;
  const std::vector<int64_t> &shape = *ctx.in[0].shape;
  int64_t C = shape.back(), total = ctx.in[0].numel();
  std::vector<float> gpu(static_cast<size_t>(total), NAN);
  KilnEmulatedNorm n{ctx.in[0].as<float>(),
                     ctx.in[1].as<float>(),
                     centered ? ctx.in[2].as<float>() : nullptr,
                     gpu.data(),
                     total / C,
                     static_cast<int>(C),
                     static_cast<float>(ctx.kernel.attrs_as_NormAttrs()->eps()),
                     centered};
  // Fewer blocks than rows (blocks loop), and a block wider than a row's
  // share (idle threads in the reduction).
  k.norm(k.entry, n, dim3(2), dim3(64));
  const float *cpu = ctx.out[0].as<float>();
  for (int64_t i = 0; i < total; ++i)
    ASSERT_NEAR(gpu[i], cpu[i], 1e-5f * std::max(1.0f, std::fabs(cpu[i])))
        << what << " element " << i;
}

const kiln_emulation::Kernel *find(const std::string &model,
                                   const std::string &function, int index) {
  for (const kiln_emulation::Kernel &k : kiln_emulation::kernels())
    if (k.model == model && k.function == function && k.index == index)
      return &k;
  return nullptr;
}

class Emulated : public ::testing::TestWithParam<std::string> {};

TEST_P(Emulated, ElementwiseKernelsMatchTheCpu) {
  std::unique_ptr<Model> model;
  std::string path =
      std::string(KILN_CUDA_TEST_DIR) + "/" + GetParam() + ".kart";
  Status s = Model::load(path, model);
  ASSERT_TRUE(s) << s.message();
  const int64_t B = 3, T = 5;
  int64_t vocab = model->vocabSize();
  ASSERT_GT(vocab, 0);
  Tensor tokens(DType::I32, {B, T}), targets(DType::I32, {B, T});
  SplitMix64 rng{7};
  for (int64_t i = 0; i < B * T; ++i) {
    tokens.as<int32_t>()[i] = static_cast<int32_t>(rng.next() % vocab);
    targets.as<int32_t>()[i] = static_cast<int32_t>(rng.next() % vocab);
  }
  int checked = 0;
  for (const char *function : {"loss_grad", "forward"}) {
    int index = -1;
    std::set<int> seen;
    RunOptions run;
    run.afterKernel = [&](const KernelContext &ctx) {
      ++index;
      kiln::kart::Op op = ctx.kernel.op();
      if (op == kiln::kart::Op::LayerNorm || op == kiln::kart::Op::RMSNorm) {
        const kiln_emulation::Kernel *k =
            find(model->modelName(), function, index);
        ASSERT_NE(k, nullptr) << function << " norm " << index;
        ASSERT_EQ(k->kind, 1);
        seen.insert(index);
        checkNorm(*k, ctx,
                  GetParam() + " " + function + " kernel " +
                      std::to_string(index));
        ++checked;
        return;
      }
      if (op != kiln::kart::Op::FusedElementwise)
        return;
      const kiln_emulation::Kernel *k =
          find(model->modelName(), function, index);
      ASSERT_NE(k, nullptr)
          << function << " kernel " << index << " was not generated";
      seen.insert(index);
      for (dim3 grid : {dim3(3), dim3(1)}) {
        std::vector<float> gpu;
        KilnEmulatedCall call = callOf(ctx, gpu);
        ASSERT_EQ(k->kind, 0);
        k->elementwise(k->entry, call, grid, dim3(32));
        const float *cpu = ctx.out[0].as<float>();
        for (int64_t i = 0; i < call.total; ++i) {
          float tol = 1e-5f * std::max(1.0f, std::fabs(cpu[i]));
          ASSERT_NEAR(gpu[i], cpu[i], tol)
              << GetParam() << " " << function << " kernel " << index
              << " element " << i << " ("
              << (ctx.kernel.location() ? ctx.kernel.location()->str()
                                        : std::string())
              << ")";
        }
      }
      ++checked;
    };
    std::vector<Tensor> out;
    std::map<std::string, Tensor> inputs = {{"tokens", tokens}};
    if (std::string(function) == "loss_grad")
      inputs["targets"] = targets;
    s = model->run(function, inputs, out, run);
    ASSERT_TRUE(s) << s.message();
    // Every kernel generated for the function ran.
    for (const kiln_emulation::Kernel &k : kiln_emulation::kernels()) {
      if (k.model == model->modelName() && k.function == function) {
        EXPECT_TRUE(seen.count(k.index)) << function << " kernel " << k.index;
      }
    }
  }
  EXPECT_GT(checked, 0);
}

INSTANTIATE_TEST_SUITE_P(Models, Emulated,
                         ::testing::Values("elementwise", "llama", "gpt2"));

} // namespace
