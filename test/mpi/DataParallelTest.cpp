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
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

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

/// How the data-parallel run reduces: ZeRO stage, bucket size (0: auto),
/// reductions started inside the backward pass or after it.
struct Reduction {
  int zero = 0;
  size_t bucket = 0;
  bool overlap = true;
  int64_t inBackward = 0; // out: reductions started inside a backward pass
};

/// `steps` steps of `accumulate` global micro-batches of `ranks` x 2 rows
/// each, data parallel on `comm` (reducing as `how` says) and alone; the
/// largest relative difference between the two runs' weights. With
/// `checkpoints`, both runs then write their optimizer state there
/// (dp.safetensors, one.safetensors).
void trainBoth(const std::shared_ptr<Communicator> &comm, int64_t accumulate,
               int steps, const std::string &optimizer, double &maxRelative,
               Reduction &how, const std::string &checkpoints = "") {
  const int zero = how.zero;
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
  config.zero = zero;
  config.bucketFloats = how.bucket;
  config.overlapReductions = how.overlap;
  Status s = Trainer::create(*dp, config, tdp);
  ASSERT_TRUE(s) << s.message();
  if (zero > 0) {
    // Moments for this rank's shard only: about 1/N of one process's.
    double share = static_cast<double>(tdp->optimizerStateBytes()) /
                   static_cast<double>(tone->optimizerStateBytes());
    auto [lo, hi] = tdp->shardRange();
    EXPECT_EQ(tdp->optimizerStateBytes(),
              (hi - lo) * sizeof(float) * (optimizer == "adamw" ? 2 : 1));
    if (N > 1) {
      EXPECT_GT(share, 0.5 / static_cast<double>(N)) << "rank " << comm->rank();
      EXPECT_LT(share, 1.5 / static_cast<double>(N)) << "rank " << comm->rank();
    }
  }
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
    how.inBackward += sdp.reductionsInBackward;
    EXPECT_LE(sdp.reductionsInBackward, sdp.reductions);
  }
  if (!checkpoints.empty()) {
    s = tdp->saveOptimizer(checkpoints + "/dp.safetensors");
    ASSERT_TRUE(s) << s.message();
    if (comm->rank() == 0) {
      ASSERT_TRUE(tone->saveOptimizer(checkpoints + "/one.safetensors"));
    }
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
  Reduction plain;
  trainBoth(comm, 1, 20, "adamw", diff, plain);
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
    Reduction plain;
    trainBoth(comm, 2, 10, optimizer, diff, plain);
    if (comm->rank() == 0)
      std::printf("%d ranks x 2 micro-batches, 10 %s steps: largest "
                  "relative weight difference %.3g\n",
                  comm->size(), optimizer, diff);
    EXPECT_EQ(diff, 0.0) << optimizer;
  }
}

TEST(DataParallel, ReductionsStartInsideTheBackwardPass) {
  // Buckets of at most 3000 floats (the model's 28 gradients in about 16):
  // with overlap their reductions start as the backward pass computes
  // them, without it after the call; the weights are the same.
  auto comm = world();
  for (bool overlap : {true, false}) {
    double diff = 1;
    Reduction how{0, 3000, overlap};
    trainBoth(comm, 2, 4, "adamw", diff, how);
    EXPECT_EQ(diff, 0.0) << "overlap " << overlap;
    if (comm->rank() == 0)
      std::printf("%d ranks, overlap %s: %lld reductions started inside "
                  "the backward pass\n",
                  comm->size(), overlap ? "on" : "off",
                  static_cast<long long>(how.inBackward));
    // 4 steps of 2 micro-batches: more than 2 buckets each start early.
    if (overlap && comm->size() > 1) {
      EXPECT_GT(how.inBackward, 4 * 2 * 2);
    } else {
      EXPECT_EQ(how.inBackward, 0);
    }
  }
}

TEST(DataParallel, TheExecutorHandsOverEachResultWhenItIsFinal) {
  std::unique_ptr<Model> m;
  ASSERT_TRUE(Model::load(artifact("gpt2.kart"), m));
  std::map<std::string, Tensor> in;
  Tensor x(DType::I32, {2, 5}), y(DType::I32, {2, 5});
  for (int i = 0; i < 10; ++i) {
    x.as<int32_t>()[i] = (i * 7) % 37;
    y.as<int32_t>()[i] = (i * 5 + 3) % 37;
  }
  in["tokens"] = x;
  in["targets"] = y;
  const FunctionInfo *f = nullptr;
  for (const FunctionInfo &fi : m->functions())
    if (fi.name == "loss_grad")
      f = &fi;
  ASSERT_NE(f, nullptr);
  const size_t results = f->outputs.size();
  // The loss, then each trainable parameter's gradient.
  std::vector<size_t> bytes = {sizeof(float)};
  for (const ParameterInfo &p : m->parameters())
    if (p.trainable) {
      size_t n = sizeof(float);
      for (int64_t d : p.shape)
        n *= static_cast<size_t>(d);
      bytes.push_back(n);
    }
  ASSERT_EQ(bytes.size(), results);
  RunOptions run;
  int kernels = 0;
  std::vector<int> when(results, -1); // kernels run when result i came
  std::vector<std::vector<char>> seen(results); // its bytes then
  run.afterKernel = [&](const KernelContext &) { ++kernels; };
  run.outputReady = [&](size_t i, const void *data) {
    if (i >= results || when[i] != -1) {
      ADD_FAILURE() << "result " << i << " handed over twice or unknown";
      return;
    }
    when[i] = kernels;
    seen[i].assign(static_cast<const char *>(data),
                   static_cast<const char *>(data) + bytes[i]);
  };
  std::vector<Tensor> out;
  ASSERT_TRUE(m->run("loss_grad", in, out, run));
  int early = 0;
  for (size_t i = 0; i < results; ++i) {
    ASSERT_GE(when[i], 0) << "result " << i << " never handed over";
    early += when[i] < kernels;
    ASSERT_EQ(seen[i].size(), out[i].bytes());
    EXPECT_EQ(std::memcmp(seen[i].data(), out[i].data(), out[i].bytes()), 0)
        << "result " << i << " changed after it was handed over";
  }
  // The loss comes with the forward pass, most gradients before the end.
  EXPECT_LT(when[0], kernels / 2);
  EXPECT_GT(early, static_cast<int>(results) / 2);
}

/// A directory every rank names alike: rank 0's, made fresh.
std::string sharedDirectory(Communicator &comm) {
  char name[64] = "/tmp/kiln-mpi-test-XXXXXX";
  if (comm.rank() == 0 && !mkdtemp(name))
    name[0] = 0;
  EXPECT_TRUE(comm.broadcast(name, sizeof name, 0));
  return name;
}

std::string readAll(const std::string &path) {
  std::string bytes;
  if (FILE *f = std::fopen(path.c_str(), "rb")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
      bytes.append(buf, n);
    std::fclose(f);
  }
  return bytes;
}

TEST(DataParallel, ZeroStagesTrainExactlyLikePlainDataParallelism) {
  // Sharded moments (1) and gradients (2) change what each rank keeps,
  // not the result: one process's weights bit for bit, and its optimizer
  // state, gathered on rank 0, byte for byte.
  auto comm = world();
  std::string dir = sharedDirectory(*comm);
  ASSERT_FALSE(dir.empty());
  for (int zero : {1, 2})
    for (int64_t accumulate : {1, 2})
      for (const char *optimizer : {"adamw", "sgd"}) {
        double diff = 1;
        // Small buckets (many reductions in flight) with accumulation.
        Reduction how{zero, accumulate == 2 ? size_t(3000) : 0};
        trainBoth(comm, accumulate, 8, optimizer, diff, how, dir);
        if (comm->rank() == 0)
          std::printf("%d ranks x %d micro-batches, ZeRO-%d, 8 %s steps: "
                      "largest relative weight difference %.3g\n",
                      comm->size(), static_cast<int>(accumulate), zero,
                      optimizer, diff);
        EXPECT_EQ(diff, 0.0) << "ZeRO-" << zero << ", " << optimizer;
        if (comm->rank() == 0) {
          std::string a = readAll(dir + "/dp.safetensors"),
                      b = readAll(dir + "/one.safetensors");
          EXPECT_FALSE(a.empty());
          EXPECT_TRUE(a == b) << "the gathered optimizer state differs";
        }
        ASSERT_TRUE(comm->barrier());
      }
  if (comm->rank() == 0) {
    std::remove((dir + "/dp.safetensors").c_str());
    std::remove((dir + "/one.safetensors").c_str());
    rmdir(dir.c_str());
  }
}

TEST(DataParallel, ZeroResumesFromAnotherRankCountsCheckpoint) {
  // One process trains 3 steps and writes a checkpoint; N ranks with
  // ZeRO-2 resume from it for 3 more; the weights equal 6 steps in one
  // process (a checkpoint holds the whole state, whoever wrote it).
  auto comm = world();
  std::string dir = sharedDirectory(*comm);
  ASSERT_FALSE(dir.empty());
  const int64_t N = comm->size(), b = 2, T = 5, vocab = 37;
  TrainConfig config;
  config.lr = 3e-3;
  config.totalSteps = 6;
  config.weightDecay = 0.1;
  config.seed = 9;
  std::unique_ptr<Model> one, dp;
  ASSERT_TRUE(Model::load(artifact("gpt2.kart"), one));
  ASSERT_TRUE(Model::load(artifact("gpt2.kart"), dp));
  one->setThreads(1);
  dp->setThreads(1);
  std::unique_ptr<Trainer> tone, tdp;
  ASSERT_TRUE(Trainer::create(*one, config, tone));
  auto batchOf = [&](int step, int64_t i, std::map<std::string, Tensor> &m) {
    // Global micro-batch row i of `step`, drawn the same everywhere.
    Tensor x(DType::I32, {b, T}), y(DType::I32, {b, T});
    SplitMix64 rng{static_cast<uint64_t>(step * 1000 + i)};
    for (int64_t j = 0; j < b * T; ++j) {
      x.as<int32_t>()[j] = static_cast<int32_t>(rng.next() % vocab);
      y.as<int32_t>()[j] = static_cast<int32_t>(rng.next() % vocab);
    }
    m["tokens"] = std::move(x);
    m["targets"] = std::move(y);
    return Status::ok();
  };
  StepStats st;
  for (int step = 0; step < 6; ++step) {
    ASSERT_TRUE(tone->step(
        N, [&](int64_t i, auto &m) { return batchOf(step, i, m); }, st));
    if (step == 2 && comm->rank() == 0) {
      ASSERT_TRUE(tone->saveCheckpoint(dir, "{}", 1));
    }
  }
  ASSERT_TRUE(comm->barrier());
  config.communicator = comm;
  config.zero = 2;
  ASSERT_TRUE(Trainer::create(*dp, config, tdp));
  Status s = tdp->loadCheckpoint(dir + "/step-00000003");
  ASSERT_TRUE(s) << s.message();
  ASSERT_EQ(tdp->stepCount(), 3);
  for (int step = 3; step < 6; ++step)
    ASSERT_TRUE(tdp->step(
        1, [&](int64_t, auto &m) { return batchOf(step, comm->rank(), m); },
        st));
  for (const ParameterInfo &p : one->parameters()) {
    Tensor a, c;
    ASSERT_TRUE(one->parameter(p.name, a));
    ASSERT_TRUE(dp->parameter(p.name, c));
    ASSERT_EQ(std::memcmp(a.data(), c.data(), a.bytes()), 0) << p.name;
  }
  ASSERT_TRUE(comm->barrier());
  if (comm->rank() == 0)
    std::system(("rm -rf " + dir).c_str());
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
