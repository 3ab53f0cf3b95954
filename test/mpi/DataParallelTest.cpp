//===- DataParallelTest.cpp - N ranks train like one process -------------===//
//
// Under mpirun: every rank trains a small GPT-2 data-parallel, and also,
// alone, the one-process run it must equal — the same global batches as
// N micro-batches accumulated in order — then compares the two.
//
//===----------------------------------------------------------------------===//
#include "runtime/Communicator.h"
#include "runtime/Model.h"
#include "runtime/Random.h"
#include "runtime/Trainer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

using namespace kiln;
using namespace kiln::runtime;

namespace {

std::string artifact(const std::string &name) {
  return std::string(KILN_MPI_TEST_ARTIFACTS) + "/" + name;
}

std::shared_ptr<Communicator> world() {
  std::shared_ptr<Communicator> c;
  Status s = openMpi(c);
  EXPECT_TRUE(s) << s.message();
  return c;
}

/// Rows [from, from + rows) of a [B, T] batch.
Tensor rowsOf(const Tensor &t, int64_t from, int64_t rows) {
  int64_t T = t.shape()[1];
  Tensor out(t.dtype(), {rows, T});
  std::memcpy(out.data(), t.as<int32_t>() + from * T,
              static_cast<size_t>(rows * T) * sizeof(int32_t));
  return out;
}

/// `steps` steps of `accumulate` global micro-batches of `ranks` x 2 rows
/// each, data parallel on `comm` and alone; the largest relative
/// difference between the two runs' weights.
void trainBoth(const std::shared_ptr<Communicator> &comm, int64_t accumulate,
               int steps, const std::string &optimizer, double &maxRelative) {
  const int64_t N = comm->size(), b = 2, T = 5, vocab = 37;
  std::unique_ptr<Model> dp, one;
  ASSERT_TRUE(Model::load(artifact("gpt2.kart"), dp));
  ASSERT_TRUE(Model::load(artifact("gpt2.kart"), one));
  dp->setThreads(1);
  one->setThreads(1);
  if (comm->rank() != 0) {
    // Trainer::create must start this rank from rank 0's weights.
    float *w = nullptr;
    ASSERT_TRUE(dp->parameterData(0, w));
    w[0] += 1.0f;
  }
  TrainConfig config;
  config.optimizer = optimizer;
  config.lr = optimizer == "sgd" ? 0.05 : 3e-3;
  config.totalSteps = steps;
  config.warmupSteps = 2;
  config.weightDecay = 0.1;
  config.clipNorm = 0.5; // clips some steps
  config.seed = 5;
  std::unique_ptr<Trainer> tdp, tone;
  ASSERT_TRUE(Trainer::create(*one, config, tone));
  config.communicator = comm;
  Status s = Trainer::create(*dp, config, tdp);
  ASSERT_TRUE(s) << s.message();
  SplitMix64 rng{3};
  for (int step = 0; step < steps; ++step) {
    // The global micro-batches, drawn alike on every rank.
    std::vector<Tensor> tokens, targets;
    for (int64_t k = 0; k < accumulate; ++k) {
      Tensor x(DType::I32, {N * b, T}), y(DType::I32, {N * b, T});
      for (int64_t i = 0; i < N * b * T; ++i) {
        x.as<int32_t>()[i] = static_cast<int32_t>(rng.next() % vocab);
        y.as<int32_t>()[i] = static_cast<int32_t>(rng.next() % vocab);
      }
      tokens.push_back(std::move(x));
      targets.push_back(std::move(y));
    }
    StepStats sdp, sone;
    s = tdp->step(
        accumulate,
        [&](int64_t k, std::map<std::string, Tensor> &m) {
          size_t ku = static_cast<size_t>(k);
          m["tokens"] = rowsOf(tokens[ku], comm->rank() * b, b);
          m["targets"] = rowsOf(targets[ku], comm->rank() * b, b);
          return Status::ok();
        },
        sdp);
    ASSERT_TRUE(s) << s.message();
    // One process: micro-batch k N + r is rank r's share of global k.
    s = tone->step(
        accumulate * N,
        [&](int64_t i, std::map<std::string, Tensor> &m) {
          size_t k = static_cast<size_t>(i / N);
          m["tokens"] = rowsOf(tokens[k], (i % N) * b, b);
          m["targets"] = rowsOf(targets[k], (i % N) * b, b);
          return Status::ok();
        },
        sone);
    ASSERT_TRUE(s) << s.message();
    ASSERT_EQ(sdp.loss, sone.loss) << "step " << step + 1;
    ASSERT_EQ(sdp.gradNorm, sone.gradNorm) << "step " << step + 1;
    EXPECT_EQ(sdp.allReduceBytes > 0, N > 1);
  }
  maxRelative = 0;
  for (const ParameterInfo &p : one->parameters()) {
    Tensor a, c;
    ASSERT_TRUE(one->parameter(p.name, a));
    ASSERT_TRUE(dp->parameter(p.name, c));
    for (int64_t i = 0; i < a.numel(); ++i) {
      double x = a.as<float>()[i], y = c.as<float>()[i];
      maxRelative = std::max(maxRelative,
                             std::fabs(x - y) / std::max(1e-3, std::fabs(x)));
    }
  }
}

TEST(DataParallel, RanksTrainBitForBitLikeOneProcessAccumulating) {
  auto comm = world();
  double diff = 1;
  trainBoth(comm, 1, 20, "adamw", diff);
  if (comm->rank() == 0)
    std::printf("%d ranks, 20 AdamW steps: largest relative weight "
                "difference %.3g\n",
                comm->size(), diff);
  EXPECT_EQ(diff, 0.0);
}

TEST(DataParallel, AccumulatingOnEachRankIsStillExact) {
  // Two micro-batches per rank, with SGD and AdamW.
  auto comm = world();
  for (const char *optimizer : {"sgd", "adamw"}) {
    double diff = 1;
    trainBoth(comm, 2, 10, optimizer, diff);
    if (comm->rank() == 0)
      std::printf("%d ranks x 2 micro-batches, 10 %s steps: largest "
                  "relative weight difference %.3g\n",
                  comm->size(), optimizer, diff);
    EXPECT_EQ(diff, 0.0) << optimizer;
  }
}

TEST(DataParallel, RanksWithDifferentModelsAreRefused) {
  auto comm = world();
  if (comm->size() < 2)
    GTEST_SKIP() << "one rank";
  std::unique_ptr<Model> m;
  ASSERT_TRUE(
      Model::load(artifact(comm->rank() == 0 ? "gpt2.kart" : "llama.kart"), m));
  TrainConfig config;
  config.communicator = comm;
  std::unique_ptr<Trainer> t;
  Status s = Trainer::create(*m, config, t);
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("holds a different model than rank 0"),
            std::string::npos)
      << s.message();
}

} // namespace
