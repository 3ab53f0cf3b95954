//===- FastKernelsTest.cpp - every fast kernel against its reference ------===//
//
// For each op whose CPU registry entry has a fast kernel (oneDNN
// primitives, flash attention), a one-op program runs twice in this process
// — RunOptions::kernels Fast, then Reference — and the results must agree
// to 1e-4 relative. A fast kernel added without a case here fails
// EveryFastKernelIsCovered.
//
//===----------------------------------------------------------------------===//
#include "runtime/Model.h"
#include "runtime/core/Device.h"
#include "runtime/cpu/KernelUtil.h"
#include "runtime/kart_generated.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <set>

using namespace kiln;
using namespace kiln::runtime;
using kart::Op;

namespace {

using Shape = std::vector<int64_t>;

/// One function, built kernel by kernel.
struct ProgramBuilder {
  kart::ProgramT program;
  kart::FunctionT *fn;
  std::vector<Shape> shapes;

  ProgramBuilder() {
    program.version = kFormatVersion;
    program.model = "fast";
    auto f = std::make_unique<kart::FunctionT>();
    f->name = "f";
    fn = f.get();
    program.functions.push_back(std::move(f));
  }
  int value(kart::ValueKind kind, const Shape &shape, int index = -1,
            kart::DType dtype = kart::DType::F32) {
    auto v = std::make_unique<kart::ValueT>();
    v->kind = kind;
    v->dtype = dtype;
    for (int64_t d : shape) {
      auto dim = std::make_unique<kart::DimT>();
      dim->factor = d;
      v->shape.push_back(std::move(dim));
    }
    v->index = index;
    fn->values.push_back(std::move(v));
    shapes.push_back(shape);
    return static_cast<int>(fn->values.size()) - 1;
  }
  int input(const Shape &shape, kart::DType dtype = kart::DType::F32) {
    int id = value(kart::ValueKind::Input, shape, fn->inputs.size(), dtype);
    fn->inputs.push_back(id);
    fn->input_names.push_back("x" + std::to_string(fn->inputs.size() - 1));
    return id;
  }
  /// Adds a kernel with results of the given shapes; returns their ids.
  std::vector<int> kernel(Op op, std::vector<int> in,
                          std::vector<Shape> outShapes,
                          kart::AttrsUnion attrs = {}) {
    auto k = std::make_unique<kart::KernelT>();
    k->op = op;
    k->inputs = std::move(in);
    for (const Shape &s : outShapes)
      k->outputs.push_back(value(kart::ValueKind::Intermediate, s));
    k->attrs = std::move(attrs);
    std::vector<int> out = k->outputs;
    fn->kernels.push_back(std::move(k));
    return out;
  }
  std::vector<uint8_t> bytes() {
    flatbuffers::FlatBufferBuilder fbb;
    kart::FinishProgramBuffer(fbb, kart::Program::Pack(fbb, &program));
    return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
  }
};

template <typename T> kart::AttrsUnion attrs(T table) {
  kart::AttrsUnion u;
  u.Set(std::move(table));
  return u;
}

struct Case {
  std::string name;
  Op op;                 // the op whose fast kernel this case covers
  bool positive = false; // inputs drawn from (0.5, 2) instead of N(0, 1)
  std::function<void(ProgramBuilder &)> build;
  /// Sets the integer inputs (zero unless this says otherwise).
  std::function<void(std::map<std::string, Tensor> &)> integers = {};
  /// Runs in training mode (dropout draws), where the fast kernel must
  /// give the reference's bits, not only its values to 1e-4.
  bool training = false;
};

void runBoth(const Case &c) {
  ProgramBuilder b;
  c.build(b);
  std::unique_ptr<Model> m;
  Status s = Model::fromBytes(b.bytes(), m, ".");
  ASSERT_TRUE(s) << c.name << ": " << s.message();
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> pos(0.5f, 2.0f);
  std::map<std::string, Tensor> in;
  for (size_t i = 0; i < b.fn->inputs.size(); ++i) {
    int id = b.fn->inputs[i];
    if (b.fn->values[id]->dtype != kart::DType::F32) {
      in[b.fn->input_names[i]] =
          Tensor(static_cast<DType>(b.fn->values[id]->dtype), b.shapes[id]);
      continue;
    }
    Tensor t(DType::F32, b.shapes[id]);
    for (int64_t j = 0; j < t.numel(); ++j)
      t.as<float>()[j] = c.positive ? pos(rng) : normal(rng);
    in[b.fn->input_names[i]] = std::move(t);
  }
  if (c.integers)
    c.integers(in);
  std::vector<Tensor> fast, ref;
  RunOptions o;
  o.training = c.training;
  o.seed = 0x5eed;
  o.kernels = KernelChoice::Fast;
  ASSERT_TRUE(m->run("f", in, fast, o)) << c.name;
  o.kernels = KernelChoice::Reference;
  ASSERT_TRUE(m->run("f", in, ref, o)) << c.name;
  ASSERT_EQ(fast.size(), ref.size());
  for (size_t i = 0; i < fast.size(); ++i) {
    ASSERT_EQ(fast[i].shape(), ref[i].shape()) << c.name;
    for (int64_t j = 0; j < ref[i].numel(); ++j) {
      float f = fast[i].as<float>()[j], r = ref[i].as<float>()[j];
      if (c.training) {
        ASSERT_EQ(std::memcmp(&f, &r, sizeof f), 0)
            << c.name << ", output " << i << ", element " << j << ": " << f
            << " vs " << r;
      }
      ASSERT_NEAR(f, r, 1e-4 * (1 + std::fabs(r)))
          << c.name << ", output " << i << ", element " << j;
    }
  }
}

std::vector<Case> cases() {
  std::vector<Case> cs;
  for (Op op : {Op::Add, Op::Sub, Op::Mul, Op::Div, Op::Max, Op::Min})
    cs.push_back({kart::EnumNameOp(op), op, op == Op::Div, [op](auto &b) {
                    // Large enough for oneDNN (smaller runs the reference).
                    int x = b.input({2, 256, 128}), y = b.input({128});
                    b.fn->outputs = b.kernel(op, {x, y}, {{2, 256, 128}});
                  }});
  for (Op op : {Op::Neg, Op::Exp, Op::Log, Op::Sqrt, Op::Rsqrt, Op::Tanh,
                Op::Sigmoid, Op::Relu, Op::Silu})
    cs.push_back({kart::EnumNameOp(op), op,
                  op == Op::Log || op == Op::Sqrt || op == Op::Rsqrt,
                  [op](auto &b) {
                    int x = b.input({2, 256, 128});
                    b.fn->outputs = b.kernel(op, {x}, {{2, 256, 128}});
                  }});
  for (auto form :
       {kart::GeluApproximation::None, kart::GeluApproximation::Tanh})
    cs.push_back(
        {std::string("Gelu ") + kart::EnumNameGeluApproximation(form), Op::Gelu,
         false, [form](auto &b) {
           kart::GeluAttrsT a;
           a.approximation = form;
           int x = b.input({2, 256, 128});
           b.fn->outputs = b.kernel(Op::Gelu, {x}, {{2, 256, 128}}, attrs(a));
         }});
  // Dropout in training: the same elements dropped as the reference's
  // double comparison, at rates near the edges of the draws too, over
  // several threads' chunks and a ragged end.
  for (double rate : {0.1, 0.5, 0.9, 1e-9, 1 - 1e-9}) {
    Case d{
        "Dropout rate " + std::to_string(rate), Op::Dropout, false,
        [rate](auto &b) {
          kart::DropoutAttrsT a;
          a.rate = rate;
          a.seed = 11;
          int x = b.input({3, 101, 131});
          b.fn->outputs = b.kernel(Op::Dropout, {x}, {{3, 101, 131}}, attrs(a));
        }};
    d.training = true;
    cs.push_back(std::move(d));
  }
  for (bool t : {false, true})
    cs.push_back(
        {t ? "Matmul transposed" : "Matmul", Op::Matmul, false, [t](auto &b) {
           kart::MatmulAttrsT a;
           a.transpose_a = a.transpose_b = t;
           int x = b.input(t ? Shape{2, 5, 3} : Shape{2, 3, 5});
           int w = b.input(t ? Shape{4, 5} : Shape{5, 4});
           b.fn->outputs = b.kernel(Op::Matmul, {x, w}, {{2, 3, 4}}, attrs(a));
         }});
  cs.push_back({"FusedMatmul", Op::FusedMatmul, false, [](auto &b) {
                  kart::FusedMatmulAttrsT a;
                  a.transpose_b = true;
                  a.scale = 0.5;
                  a.activation = kart::Activation::GeluTanh;
                  int x = b.input({2, 3, 5}), w = b.input({4, 5});
                  int bias = b.input({4}), res = b.input({2, 3, 4});
                  b.fn->outputs = b.kernel(Op::FusedMatmul, {x, w, bias, res},
                                           {{2, 3, 4}}, attrs(a));
                }});
  cs.push_back(
      {"Transpose", Op::Transpose, false, [](auto &b) {
         kart::TransposeAttrsT a;
         a.perm = {2, 0, 1};
         int x = b.input({2, 3, 4});
         b.fn->outputs = b.kernel(Op::Transpose, {x}, {{4, 2, 3}}, attrs(a));
       }});
  // Axes 0 and 2 are not one block, so oneDNN (not the blocked kernel)
  // takes them.
  for (Op op : {Op::ReduceSum, Op::ReduceMean, Op::ReduceMax})
    cs.push_back({kart::EnumNameOp(op), op, false, [op](auto &b) {
                    kart::ReduceAttrsT a;
                    a.axes = {0, 2};
                    int x = b.input({2, 3, 4});
                    b.fn->outputs = b.kernel(op, {x}, {{3}}, attrs(a));
                  }});
  cs.push_back(
      {"LayerNorm", Op::LayerNorm, false, [](auto &b) {
         kart::NormAttrsT a;
         a.eps = 1e-5;
         int x = b.input({2, 3, 8}), w = b.input({8}), bias = b.input({8});
         b.fn->outputs =
             b.kernel(Op::LayerNorm, {x, w, bias}, {{2, 3, 8}}, attrs(a));
       }});
  cs.push_back(
      {"Softmax", Op::Softmax, false, [](auto &b) {
         kart::AxisAttrsT a;
         a.axis = -1;
         int x = b.input({2, 3, 8});
         b.fn->outputs = b.kernel(Op::Softmax, {x}, {{2, 3, 8}}, attrs(a));
       }});
  for (auto kind : {kart::Activation::Relu, kart::Activation::Gelu,
                    kart::Activation::GeluTanh, kart::Activation::Silu})
    cs.push_back(
        {std::string("ActivationGrad ") + kart::EnumNameActivation(kind),
         Op::ActivationGrad, false, [kind](auto &b) {
           kart::ActivationGradAttrsT a;
           a.kind = kind;
           int g = b.input({2, 8}), x = b.input({2, 8});
           b.fn->outputs =
               b.kernel(Op::ActivationGrad, {g, x}, {{2, 8}}, attrs(a));
         }});
  // Attention forward, then its gradient from the forward's output and
  // lse, with grouped key/value heads and every pattern kind, causal or
  // not (T = 150 crosses blocks; the random blocks differ per head).
  std::vector<std::pair<std::string, kart::AttentionPatternT>> patterns;
  for (bool causal : {false, true}) {
    auto add = [&](std::string name, auto set) {
      kart::AttentionPatternT p;
      p.causal = causal;
      set(p);
      patterns.push_back({name + (causal ? " causal" : ""), p});
    };
    add("dense", [](auto &) {});
    add("sliding_window(40)", [](auto &p) {
      p.kind = kart::PatternKind::SlidingWindow;
      p.window = 40;
    });
    add("sliding_window(70) global_tokens 3", [](auto &p) {
      p.kind = kart::PatternKind::SlidingWindow;
      p.window = 70;
      p.global_tokens = 3;
    });
    add("block_sparse(16, 1, 1, 2)", [](auto &p) {
      p.kind = kart::PatternKind::BlockSparse;
      p.block = 16;
      p.local = 1;
      p.global_blocks = 1;
      p.random = 2;
      p.seed = 5;
    });
    add("strided(9)", [](auto &p) {
      p.kind = kart::PatternKind::Strided;
      p.stride = 9;
    });
    add("fixed(32, 4)", [](auto &p) {
      p.kind = kart::PatternKind::Fixed;
      p.stride = 32;
      p.summary = 4;
    });
  }
  for (const auto &[name, pattern] : patterns)
    for (Op op : {Op::Attention, Op::AttentionGrad})
      cs.push_back({std::string(kart::EnumNameOp(op)) + " " + name, op, false,
                    [pattern = pattern, op](auto &b) {
                      auto make = [&] {
                        kart::AttentionAttrsT a;
                        a.heads = 4;
                        a.kv_heads = 2;
                        a.scale = 0.35;
                        a.pattern =
                            std::make_unique<kart::AttentionPatternT>(pattern);
                        return attrs(a);
                      };
                      int q = b.input({2, 150, 16}), k = b.input({2, 150, 8}),
                          v = b.input({2, 150, 8}), g = b.input({2, 150, 16});
                      auto fwd = b.kernel(Op::Attention, {q, k, v, -1, -1},
                                          {{2, 150, 16}, {2, 4, 150}}, make());
                      if (op == Op::Attention) {
                        b.fn->outputs = fwd;
                        return;
                      }
                      b.fn->outputs = b.kernel(
                          Op::AttentionGrad,
                          {g, q, k, v, fwd[0], fwd[1], -1, -1},
                          {{2, 150, 16}, {2, 150, 8}, {2, 150, 8}}, make());
                    }});
  // kiln.cached_attention on B rows of T new tokens of `width` query
  // features (4 heads over 2 key/value heads) and a 160-slot cache; with
  // `relative`, T5's relative position bias (8 buckets up to distance 20).
  auto cached = [](const std::string &name, int64_t window, int64_t B,
                   int64_t T, int64_t width,
                   std::function<void(std::map<std::string, Tensor> &)> fill,
                   bool relative = false) {
    return Case{name + " window " + std::to_string(window) +
                    (relative ? " relative bias" : ""),
                Op::CachedAttention, false,
                [=](auto &b) {
                  kart::AttentionAttrsT a;
                  a.heads = 4;
                  a.kv_heads = 2;
                  a.scale = 0.35;
                  a.pattern = std::make_unique<kart::AttentionPatternT>();
                  a.pattern->causal = true;
                  if (window) {
                    a.pattern->kind = kart::PatternKind::SlidingWindow;
                    a.pattern->window = window;
                  }
                  if (relative) {
                    a.relative =
                        std::make_unique<kart::RelativePositionBucketAttrsT>();
                    a.relative->buckets = 8;
                    a.relative->max_distance = 20;
                  }
                  int64_t kv = width / 2;
                  int q = b.input({B, T, width}), k = b.input({B, T, kv}),
                      v = b.input({B, T, kv}), kc = b.input({B, 160, kv}),
                      vc = b.input({B, 160, kv}),
                      pos = b.input({B, T}, kart::DType::I32),
                      len = b.input({B}, kart::DType::I32);
                  std::vector<int> in{q, k, v, kc, vc, pos, len};
                  if (relative)
                    in.push_back(b.input({8, 4}));
                  b.fn->outputs = b.kernel(Op::CachedAttention, in,
                                           {{B, T, width}}, attrs(a));
                },
                fill};
  };
  for (int64_t window : {0, 40}) {
    // A prompt into an empty cache (flash attention) against the
    // row-by-row kernel: ragged rows, grouped heads. Inputs x5 and x6 are
    // the positions and lengths.
    cs.push_back(cached("CachedAttention", window, 2, 150, 16, [](auto &in) {
      int32_t *pos = in["x5"].template as<int32_t>();
      for (int64_t i = 0; i < 2 * 150; ++i)
        pos[i] = static_cast<int32_t>(i % 150);
      in["x6"].template as<int32_t>()[0] = 150;
      in["x6"].template as<int32_t>()[1] = 97;
    }));
    // Decoding steps after a filled cache (the vectorized row kernel):
    // rows at positions 130, 57 and 0, the last one padding.
    auto steps = [](auto &in) {
      const int32_t pos[] = {130, 57, 0}, len[] = {1, 1, 0};
      for (int i = 0; i < 3; ++i) {
        in["x5"].template as<int32_t>()[i] = pos[i];
        in["x6"].template as<int32_t>()[i] = len[i];
      }
    };
    cs.push_back(cached("CachedAttention step", window, 3, 1, 80, steps));
    if (window == 0)
      cs.push_back(
          cached("CachedAttention step", window, 3, 1, 80, steps, true));
  }
  return cs;
}

TEST(FastKernels, MatchTheirReferences) {
  for (const Case &c : cases()) {
    SCOPED_TRACE(c.name);
    runBoth(c);
    if (HasFatalFailure())
      return;
  }
}

// The fast dropout kernel compares a draw's 53 bits with an integer
// threshold where the reference compares a double with the rate: the
// threshold must sit exactly where the reference's comparison flips (a draw
// lands on it once in 2^53, so the kernels' comparison above cannot see it).
TEST(FastKernels, DropoutThresholdIsWhereTheComparisonFlips) {
  auto uniform = [](uint64_t k) {
    return (static_cast<double>(k) + 0.5) * 0x1.0p-53;
  };
  for (double rate : {1e-300, 1e-9, 0.1, 0.25, 0.5, 0.5 + 0x1.0p-40, 0.9,
                      1 - 1e-9, 1 - 0x1.0p-53, 1.0}) {
    uint64_t k = cpu::dropoutThreshold(rate);
    SCOPED_TRACE(rate);
    ASSERT_LE(k, uint64_t(1) << 53);
    if (k > 0) {
      EXPECT_LT(uniform(k - 1), rate);
    }
    if (k < (uint64_t(1) << 53)) {
      EXPECT_GE(uniform(k), rate);
    }
  }
  EXPECT_EQ(cpu::dropoutThreshold(1e-300), 0u); // below every draw
  EXPECT_EQ(cpu::dropoutThreshold(0.0), 0u);
  // The top draw's uniform() rounds to 1.0, so even a rate of 1 keeps it.
  EXPECT_EQ(cpu::dropoutThreshold(1.0), (uint64_t(1) << 53) - 1);
}

TEST(FastKernels, EveryFastKernelIsCovered) {
  std::set<Op> covered;
  for (const Case &c : cases())
    covered.insert(c.op);
  for (int i = 0; i <= static_cast<int>(Op::MAX); ++i) {
    const KernelImpl *k = cpuDevice().kernel(static_cast<Op>(i));
    ASSERT_NE(k, nullptr);
    ASSERT_NE(k->reference, nullptr);
    if (k->fast) {
      EXPECT_TRUE(covered.count(k->op))
          << kart::EnumNameOp(k->op)
          << " has a fast kernel but no case in FastKernelsTest";
    }
  }
}

TEST(FastKernels, TheChoiceIsPerCall) {
  // One model, two threads' worth of choices: a reference call between
  // fast ones changes nothing about the fast ones.
  ProgramBuilder b;
  int x = b.input({4, 8});
  b.fn->outputs = b.kernel(Op::Tanh, {x}, {{4, 8}});
  std::unique_ptr<Model> m;
  ASSERT_TRUE(Model::fromBytes(b.bytes(), m, "."));
  Tensor t(DType::F32, {4, 8});
  for (int i = 0; i < 32; ++i)
    t.as<float>()[i] = 0.1f * i - 1.5f;
  std::vector<Tensor> a, r, a2;
  RunOptions fast, ref;
  fast.kernels = KernelChoice::Fast;
  ref.kernels = KernelChoice::Reference;
  ASSERT_TRUE(m->run("f", {{"x0", t}}, a, fast));
  ASSERT_TRUE(m->run("f", {{"x0", t}}, r, ref));
  ASSERT_TRUE(m->run("f", {{"x0", t}}, a2, fast));
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(a[0].as<float>()[i], a2[0].as<float>()[i]);
    EXPECT_EQ(r[0].as<float>()[i], std::tanh(t.as<float>()[i]));
  }
}

} // namespace
