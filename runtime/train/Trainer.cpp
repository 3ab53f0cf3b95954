//===- Trainer.cpp - training steps on a compiled gradient function -------===//
#include "runtime/Trainer.h"
#include "runtime/Memory.h"
#include "runtime/train/GradientReducer.h"

#include "runtime/File.h"
#include "runtime/Random.h"
#include "runtime/quant/Serialize.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>

using namespace kiln::runtime;

namespace {
constexpr double kPi = 3.14159265358979323846;
/// ZeRO: the updated weights cross between ranks in buckets of this many
/// floats (16 MiB).
constexpr size_t kGatherBucket = size_t(1) << 22;

/// Reads a .safetensors file and indexes its tensors by name.
Status readByName(const std::string &path, NamedTensors &tensors,
                  std::map<std::string, const Tensor *> &byName,
                  size_t maxTensors) {
  if (Status s = readSafetensors(path, tensors, maxTensors); !s)
    return s;
  for (const auto &[name, tensor] : tensors)
    byName[name] = &tensor;
  return Status::ok();
}

const FunctionInfo *findFunction(const Model &m, const std::string &name) {
  for (const FunctionInfo &f : m.functions())
    if (f.name == name)
      return &f;
  return nullptr;
}
} // namespace

Status Trainer::create(Model &model, const TrainConfig &config,
                       std::unique_ptr<Trainer> &out) {
  if (config.optimizer != "adamw" && config.optimizer != "sgd")
    return Status::error("unknown optimizer '" + config.optimizer +
                         "'; expected adamw or sgd");
  if (!(config.lr > 0) || !(config.minLrRatio >= 0) || config.minLrRatio > 1 ||
      config.warmupSteps < 0 || config.totalSteps < 1)
    return Status::error("the learning-rate schedule is invalid: lr must be "
                         "positive, min-lr-ratio in [0, 1], warmup >= 0 and "
                         "steps >= 1");
  if (!(config.beta1 >= 0 && config.beta1 < 1) ||
      !(config.beta2 >= 0 && config.beta2 < 1) || !(config.eps > 0) ||
      !(config.weightDecay >= 0) ||
      !(config.momentum >= 0 && config.momentum < 1))
    return Status::error("optimizer settings are out of range (betas and "
                         "momentum in [0, 1), eps > 0, weight decay >= 0)");
  if (config.zero < 0 || config.zero > 2)
    return Status::error("ZeRO stage " + std::to_string(config.zero) +
                         " does not exist; expected 0, 1 or 2");
  const std::string gradName = config.loss + "_grad";
  const FunctionInfo *grad = findFunction(model, gradName);
  if (!findFunction(model, config.loss) || !grad)
    return Status::error(
        "the artifact has no '" + gradName +
        "' function to train with; compile it with " +
        optionRef("--grad=" + config.loss, "grad=\"" + config.loss + "\""));
  const auto &params = model.parameters();
  size_t trainable = 0;
  for (const ParameterInfo &p : params)
    trainable += p.trainable;
  if (grad->outputs.size() != trainable + 1)
    return Status::error("'" + gradName + "' returns " +
                         std::to_string(grad->outputs.size()) +
                         " values; expected the loss and one gradient for "
                         "each of the " +
                         std::to_string(trainable) + " trainable parameters");
  std::unique_ptr<Trainer> t(new Trainer(model, config));
  // Parameter i's gradient is result gradIndex_[i] of loss_grad (-1:
  // frozen, none).
  int next = 1;
  for (const ParameterInfo &p : params)
    t->gradIndex_.push_back(p.trainable ? next++ : -1);
  if (config.compiledStep) {
    const FunctionInfo *step = findFunction(model, "train_step");
    const FunctionInfo *loss = findFunction(model, config.loss);
    if (!step || step->inputs.size() != loss->inputs.size() + 2 ||
        step->outputs.size() != 2)
      return Status::error("the artifact has no compiled train_step for '" +
                           config.loss + "' (kiln-train-step)");
    for (const ArgInfo &a : loss->inputs)
      if (a.name == "lr" || a.name == "step")
        return Status::error("'" + config.loss + "' has an input named '" +
                             a.name + "', which train_step uses itself");
    t->haveTrainStep_ = true;
  }
  for (const ParameterInfo &p : params) {
    if (p.dtype != DType::F32)
      return Status::error("parameter '" + p.name +
                           "' is not f32; kiln trains f32 parameters");
    size_t n = 1;
    for (int64_t d : p.shape)
      n *= static_cast<size_t>(d);
    t->sizes_.push_back(n);
  }
  std::vector<bool> isTrained;
  for (const ParameterInfo &p : params)
    isTrained.push_back(p.trainable);
  t->layout_ = std::make_unique<ParameterLayout>(t->sizes_, isTrained);
  if (config.communicator && config.communicator->size() > 1)
    if (Status s = t->joinRanks(); !s)
      return s;
  OptimizerState *state = nullptr;
  if (Status s = model.optimizerState(state); !s)
    return s;
  OptimizerState &st = *state;
  bool adamw = config.optimizer == "adamw";
  // Moments for the elements this rank updates: all of a trainable
  // parameter, or with ZeRO its part of this rank's shard; frozen
  // parameters have no state and are never updated.
  std::vector<size_t> sizes(params.size(), 0);
  for (size_t i = 0; i < params.size(); ++i) {
    auto [lo, hi] = t->layout_->owned(i, t->rank());
    sizes[i] = hi - lo;
  }
  if (!config.optimizerStateFile.empty()) {
    // Paged: the moments live in a memory-mapped file, one per rank (ranks
    // on one machine must not share one mapping).
    std::string path = config.optimizerStateFile;
    if (t->ranks_ > 1)
      path += ".rank" + std::to_string(t->rank());
    if (Status s = st.mapFile(path, sizes, adamw); !s)
      return s;
  } else {
    st.file.reset();
    st.m.assign(params.size(), {});
    st.v.assign(params.size(), {});
    for (size_t i = 0; i < params.size(); ++i) {
      if (!sizes[i])
        continue;
      st.m[i].assign(sizes[i], 0.0f);
      if (adamw)
        st.v[i].assign(sizes[i], 0.0f);
    }
  }
  out = std::move(t);
  return Status::ok();
}

Status Trainer::joinRanks() {
  Communicator &comm = *config_.communicator;
  ranks_ = comm.size();
  haveTrainStep_ = false; // its update has no all-reduce in it
  const auto &params = model_.parameters();
  // The ranks must hold the same model: compare a digest of the parameter
  // table (names, shapes, trainability) with rank 0's.
  uint64_t digest = 1469598103934665603ull;
  auto mix = [&](uint64_t v) { digest = (digest ^ v) * 1099511628211ull; };
  for (const ParameterInfo &p : params) {
    for (char c : p.name)
      mix(static_cast<unsigned char>(c));
    for (int64_t d : p.shape)
      mix(static_cast<uint64_t>(d));
    mix(p.trainable);
  }
  std::vector<uint64_t> digests(static_cast<size_t>(ranks_));
  if (Status s = comm.allGatherBytes(&digest, digests.data(), sizeof digest);
      !s)
    return s;
  for (int r = 1; r < ranks_; ++r)
    if (digests[static_cast<size_t>(r)] != digests[0])
      return Status::error("rank " + std::to_string(r) +
                           " holds a different model than rank 0 (its "
                           "parameters differ in name, shape or training)");
  // Every rank starts from rank 0's trainable weights.
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i].trainable)
      continue;
    float *w = nullptr;
    auto writing = model_.lockParameters();
    if (Status s = model_.parameterData(i, w); !s)
      return s;
    if (Status s = comm.broadcast(w, sizes_[i] * sizeof(float), 0); !s)
      return s;
  }
  // ZeRO: one contiguous shard per rank, its bounds at the starts of
  // sumOfSquares's chunks, so that the ranks' partial sums of squares add
  // up to the one-process norm.
  if (config_.zero > 0)
    layout_->shard(ranks_, kSquareSumChunk);
  reducer_ = std::make_unique<GradientReducer>(comm, *layout_, config_.zero,
                                               config_.bucketFloats);
  paramOf_.assign(static_cast<size_t>(gradIndex_.size()) + 1, -1);
  for (size_t i = 0; i < gradIndex_.size(); ++i)
    if (gradIndex_[i] >= 0)
      paramOf_[static_cast<size_t>(gradIndex_[i])] = static_cast<int>(i);
  return Status::ok();
}

Trainer::Trainer(Model &model, const TrainConfig &config)
    : model_(model), config_(config) {}

Trainer::~Trainer() = default;

int Trainer::rank() const {
  return ranks_ > 1 ? config_.communicator->rank() : 0;
}

std::pair<size_t, size_t> Trainer::shardRange() const {
  return layout_->range(rank());
}

uint64_t Trainer::optimizerStateBytes() const {
  uint64_t n = 0;
  for (size_t i = 0; i < sizes_.size(); ++i) {
    auto [lo, hi] = layout_->owned(i, rank());
    n += hi - lo;
  }
  return n * (config_.optimizer == "adamw" ? 2 : 1) * sizeof(float);
}

double Trainer::learningRate(int64_t step) const {
  const TrainConfig &c = config_;
  if (step < c.warmupSteps)
    return c.lr * static_cast<double>(step + 1) /
           static_cast<double>(c.warmupSteps);
  double minLr = c.lr * c.minLrRatio;
  int64_t span = c.totalSteps - c.warmupSteps;
  if (span <= 0 || step >= c.totalSteps)
    return span <= 0 ? c.lr : minLr;
  double progress =
      static_cast<double>(step - c.warmupSteps) / static_cast<double>(span);
  return minLr + 0.5 * (1.0 + std::cos(kPi * progress)) * (c.lr - minLr);
}

Status
Trainer::step(const std::vector<std::map<std::string, Tensor>> &microBatches,
              StepStats &stats) {
  return step(
      static_cast<int64_t>(microBatches.size()),
      [&](int64_t i, std::map<std::string, Tensor> &batch) {
        batch = microBatches[static_cast<size_t>(i)];
        return Status::ok();
      },
      stats);
}

Status Trainer::step(int64_t count, const MicroBatchSource &next,
                     StepStats &stats) {
  if (count < 1)
    return Status::error("a training step needs at least one micro-batch");
  std::map<std::string, Tensor> batch;
  ThreadScope threads(model_.threads()); // the optimizer's loops too
  if (ranks_ > 1)
    return parallelStep(count, next, stats);
  const auto &params = model_.parameters();
  size_t np = params.size();
  if (haveTrainStep_ && count == 1) {
    // The compiled step: forward, backward and the in-place update in one
    // call of train_step.
    double lr = learningRate(step_);
    std::map<std::string, Tensor> &in = batch;
    if (Status s = next(0, in); !s)
      return s;
    Tensor lrT(DType::F32, {}), stepT(DType::F32, {});
    lrT.as<float>()[0] = static_cast<float>(lr);
    stepT.as<float>()[0] = static_cast<float>(step_ + 1);
    in["lr"] = std::move(lrT);
    in["step"] = std::move(stepT);
    RunOptions run;
    run.training = true;
    SplitMix64 mix{config_.seed ^ (static_cast<uint64_t>(step_) << 20)};
    run.seed = mix.next();
    if (Status s = model_.run("train_step", in, out_, run); !s)
      return s;
    double loss = out_[0].as<float>()[0];
    if (!std::isfinite(loss))
      return Status::error("the loss is " + std::to_string(loss) + " at step " +
                           std::to_string(step_ + 1) +
                           "; lower the learning rate or check the data");
    ++step_;
    stats.loss = loss;
    stats.lr = lr;
    stats.gradNorm = out_[1].as<float>()[0];
    return Status::ok();
  }
  double lossSum = 0;
  size_t nmb = static_cast<size_t>(count);
  float inv = 1.0f / static_cast<float>(nmb);
  if (nmb > 1 && grads_.size() != np)
    for (size_t i = 0; i < np; ++i)
      grads_.emplace_back(params[i].trainable ? sizes_[i] : 0, 0.0f);
  // With one micro-batch the gradients are used where loss_grad left them;
  // with several, their mean is accumulated in grads_.
  std::vector<const float *> grad(np);
  for (size_t mb = 0; mb < nmb; ++mb) {
    RunOptions run;
    run.training = true;
    SplitMix64 mix{config_.seed ^ (static_cast<uint64_t>(step_) << 20) ^
                   static_cast<uint64_t>(mb)};
    run.seed = mix.next();
    std::vector<Tensor> &out = out_;
    if (Status s = next(static_cast<int64_t>(mb), batch); !s)
      return s;
    if (Status s = model_.run(config_.loss + "_grad", batch, out, run); !s)
      return s;
    double loss = out[0].as<float>()[0];
    if (!std::isfinite(loss))
      return Status::error("the loss is " + std::to_string(loss) + " at step " +
                           std::to_string(step_ + 1) + " (micro-batch " +
                           std::to_string(mb) +
                           "); lower the learning rate or check the data");
    lossSum += loss;
    for (size_t i = 0; i < np; ++i) {
      if (gradIndex_[i] < 0)
        continue; // frozen: no gradient
      const float *g = out[gradIndex_[i]].as<float>();
      if (nmb == 1) {
        grad[i] = g;
        continue;
      }
      float *acc = grads_[i].data();
      grad[i] = acc;
      int64_t n = static_cast<int64_t>(sizes_[i]);
#pragma omp parallel for if (n > 65536)
      for (int64_t j = 0; j < n; ++j)
        acc[j] = mb == 0 ? g[j] * inv : acc[j] + g[j] * inv;
    }
  }
  if (Status s = update(grad, stats); !s)
    return s;
  stats.loss = lossSum / static_cast<double>(nmb);
  return Status::ok();
}

Status Trainer::parallelStep(int64_t count, const MicroBatchSource &next,
                             StepStats &stats) {
  Communicator &comm = *config_.communicator;
  GradientReducer &reducer = *reducer_;
  const int64_t ranks = ranks_, rank = comm.rank();
  const auto &params = model_.parameters();
  size_t np = params.size();
  // One process adds its count N micro-batch gradients, each scaled by
  // 1/(count N), in one sequence: acc = ((g0 + g1) + g2) ... The ranks
  // keep that order exactly (GradientReducer): after micro-batch k the
  // all-reduce adds rank 0's running sum plus its gradient, then the other
  // ranks' gradients, in rank order — or with ZeRO the shard's owner adds
  // them to its running sum. So data parallelism gives the one-process
  // result bit for bit, with accumulation too. Each bucket of gradients
  // starts its reduction as soon as the backward pass has computed them
  // all, and the reductions run on while the rest of the backward pass
  // and the next micro-batch compute (the kernels push them along).
  float inv = 1.0f / static_cast<float>(count * ranks);
  std::vector<double> losses(static_cast<size_t>(count));
  std::map<std::string, Tensor> batch;
  reducer.resetStats();
  stats.reductionsInBackward = 0;
  stats.reductions = count * static_cast<int64_t>(reducer.buckets());
  for (int64_t mb = 0; mb < count; ++mb) {
    int64_t global = mb * ranks + rank;
    RunOptions run;
    run.training = true;
    SplitMix64 mix{config_.seed ^ (static_cast<uint64_t>(step_) << 20) ^
                   static_cast<uint64_t>(global)};
    run.seed = mix.next();
    if (Status s = reducer.begin(mb, count, inv); !s)
      return s;
    Status failed = Status::ok();
    run.afterKernel = [&](const KernelContext &) {
      if (failed)
        failed = reducer.progress();
    };
    if (config_.overlapReductions)
      run.outputReady = [&](size_t result, const void *data) {
        int p = paramOf_[result];
        if (p >= 0 && failed)
          failed = reducer.add(static_cast<size_t>(p),
                               static_cast<const float *>(data));
      };
    if (Status s = next(mb, batch); !s)
      return s;
    uint64_t before = reducer.started();
    if (Status s = model_.run(config_.loss + "_grad", batch, out_, run); !s)
      return Status::error("rank " + std::to_string(rank) + ": " + s.message());
    if (!failed)
      return failed;
    stats.reductionsInBackward +=
        static_cast<int64_t>(reducer.started() - before);
    losses[static_cast<size_t>(mb)] = out_[0].as<float>()[0];
    // The gradients the call did not hand over while it ran (overlap off,
    // or another device), in parameter order.
    for (size_t i = 0; i < np; ++i)
      if (gradIndex_[i] >= 0 && !reducer.added(i))
        if (Status s = reducer.add(
                i, out_[static_cast<size_t>(gradIndex_[i])].as<float>());
            !s)
          return s;
    if (Status s = reducer.end(); !s)
      return s;
  }
  if (Status s = reducer.finish(); !s)
    return s;
  // Every rank's losses, added in the order one process would have run
  // the micro-batches (k outer, rank inner).
  std::vector<double> all(losses.size() * static_cast<size_t>(ranks));
  if (Status s = comm.allGatherBytes(losses.data(), all.data(),
                                     losses.size() * sizeof(double));
      !s)
    return s;
  stats.allReduceSeconds = reducer.waitedSeconds();
  // Each micro-batch's gradients, every trainable element.
  stats.allReduceBytes =
      static_cast<uint64_t>(count) * layout_->total() * sizeof(float);
  double lossSum = 0;
  for (int64_t mb = 0; mb < count; ++mb)
    for (int64_t r = 0; r < ranks; ++r) {
      double loss = all[static_cast<size_t>(r * count + mb)];
      if (!std::isfinite(loss))
        return Status::error("the loss is " + std::to_string(loss) +
                             " at step " + std::to_string(step_ + 1) +
                             " (rank " + std::to_string(r) + ", micro-batch " +
                             std::to_string(mb) +
                             "); lower the learning rate or check the data");
      lossSum += loss;
    }
  // Each parameter's summed gradient over the elements this rank updates:
  // all of them, or with ZeRO those of its shard.
  std::vector<const float *> grad(np, nullptr);
  for (size_t i = 0; i < np; ++i)
    grad[i] = reducer.gradient(i);
  if (Status s = update(grad, stats); !s)
    return s;
  stats.loss = lossSum / static_cast<double>(count * ranks);
  return Status::ok();
}

Status Trainer::update(const std::vector<const float *> &grad,
                       StepStats &stats) {
  // The global norm (fixed chunks: the same for any thread count), rounded
  // to f32 as kiln.global_norm returns it, so this path and a compiled
  // train_step agree bit for bit.
  std::shared_ptr<Profiler> profiler = model_.profiler();
  double updateStart = profiler ? profiler->nowUs() : 0;
  const auto &params = model_.parameters();
  size_t np = params.size();
  const int me = rank();
  std::vector<std::pair<const float *, int64_t>> ts;
  for (size_t i = 0; i < np; ++i)
    if (grad[i]) {
      auto [lo, hi] = layout_->owned(i, me);
      ts.push_back({grad[i], static_cast<int64_t>(hi - lo)});
    }
  double squares = 0;
  if (layout_->sharded()) {
    // Every rank's chunk sums, added in one process's order.
    std::vector<size_t> chunksOf(static_cast<size_t>(ranks_), 0);
    for (int r = 0; r < ranks_; ++r)
      for (size_t i = 0; i < np; ++i) {
        auto [lo, hi] = layout_->owned(i, r);
        chunksOf[static_cast<size_t>(r)] +=
            (hi - lo + kSquareSumChunk - 1) / kSquareSumChunk;
      }
    std::vector<double> mine = squareSumsByChunk(ts);
    size_t most = *std::max_element(chunksOf.begin(), chunksOf.end());
    if (mine.size() != chunksOf[static_cast<size_t>(me)])
      return Status::error("internal error: the gradient shard has " +
                           std::to_string(mine.size()) + " chunks, planned " +
                           std::to_string(chunksOf[static_cast<size_t>(me)]));
    mine.resize(most, 0.0);
    std::vector<double> all(most * static_cast<size_t>(ranks_));
    if (Status s = config_.communicator->allGatherBytes(mine.data(), all.data(),
                                                        most * sizeof(double));
        !s)
      return s;
    for (int r = 0; r < ranks_; ++r)
      for (size_t c = 0; c < chunksOf[static_cast<size_t>(r)]; ++c)
        squares += all[static_cast<size_t>(r) * most + c];
  } else {
    squares = sumOfSquares(ts);
  }
  float norm = static_cast<float>(std::sqrt(squares));
  OptimizerState *state = nullptr;
  if (Status s = model_.optimizerState(state); !s)
    return s;
  OptimizerState &st = *state;
  double lr = learningRate(step_);
  ++step_;
  UpdateRule rule = ruleFor(lr);
  rule.clip = clipScale(norm, config_.clipNorm);
  {
    auto writing = model_.lockParameters(); // no call reads half-updated
    for (size_t i = 0; i < np; ++i) {
      if (!grad[i])
        continue;
      UpdateRule r = rule;
      if (params[i].shape.size() < 2)
        r.weightDecay = 0;
      float *param = nullptr;
      if (Status s = model_.parameterData(i, param); !s)
        return s;
      auto [lo, hi] = layout_->owned(i, me);
      applyUpdate(r, param + lo, st.m[i].data(),
                  rule.adamw ? st.v[i].data() : nullptr, grad[i],
                  static_cast<int64_t>(hi - lo));
    }
  }
  if (layout_->sharded()) {
    auto t0 = std::chrono::steady_clock::now();
    if (Status s = gatherParameters(); !s)
      return s;
    stats.allReduceSeconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
  }
  if (profiler) {
    // The update outside the compiled functions, in the trace too.
    ProfileSlice update;
    update.kind = ProfileSlice::Kind::Host;
    update.name = "optimizer update";
    update.function = config_.optimizer;
    update.startUs = updateStart;
    update.durationUs = profiler->nowUs() - updateStart;
    update.thread = profiler->threadIndex();
    profiler->record(std::move(update));
  }
  stats.lr = lr;
  stats.gradNorm = norm;
  return Status::ok();
}

Status Trainer::gatherParameters() {
  Communicator &comm = *config_.communicator;
  const size_t total = layout_->total();
  const auto [own0, own1] = shardRange();
  const size_t me = static_cast<size_t>(comm.rank());
  const size_t bucket = std::min(kGatherBucket, total);
  std::vector<float> &stage = gatherStage_;
  stage.resize(bucket);
  float *st = stage.data();
  Status failed = Status::ok();
  // Copies the weights' flat elements [lo, hi) to or from the staging
  // bucket that starts at flat element `a`.
  auto copy = [&](size_t a, size_t lo, size_t hi, bool toStage) {
    layout_->forEachIn(lo, hi, [&](size_t i, size_t from, size_t n, size_t at) {
      float *w = nullptr;
      if (!failed || !(failed = model_.parameterData(i, w)))
        return;
      if (toStage)
        std::memcpy(st + (at - a), w + from, n * sizeof(float));
      else
        std::memcpy(w + from, st + (at - a), n * sizeof(float));
    });
  };
  auto writing = model_.lockParameters();
  for (size_t a = 0; a < total; a += bucket) {
    size_t b = std::min(a + bucket, total);
    Shards w = layout_->window(a, b);
    copy(a, std::max(a, own0), std::min(b, own1), true);
    if (Status s = comm.allGather(st + w.offsets[me], st, w); !s)
      return s;
    copy(a, a, b, false);
    if (!failed)
      return failed;
  }
  return Status::ok();
}

Status Trainer::estimateMemory(const std::map<std::string, int64_t> &dims,
                               int64_t accumulate, MemoryEstimate &out) {
  const std::string fn = haveTrainStep_ && accumulate == 1
                             ? std::string("train_step")
                             : config_.loss + "_grad";
  // Each function keeps its arena between calls: the step's and the
  // evaluation's (the loss alone) are both held.
  MemoryReport report, eval;
  if (Status s = model_.memoryReport(fn, dims, report); !s)
    return s;
  if (Status s = model_.memoryReport(config_.loss, dims, eval); !s)
    return s;
  uint64_t weights = 0, trained = 0, own = 0;
  const auto &params = model_.parameters();
  for (size_t i = 0; i < sizes_.size(); ++i) {
    uint64_t bytes = static_cast<uint64_t>(sizes_[i]) * sizeof(float);
    weights += bytes;
    if (params[i].trainable)
      trained += bytes;
    auto [lo, hi] = layout_->owned(i, rank());
    own += static_cast<uint64_t>(hi - lo) * sizeof(float);
  }
  // Weights (as f32: an upper bound for quantized ones); for the trained
  // ones, gradients (loss_grad's results; a second copy accumulates
  // micro-batches, or is reduced between ranks: with ZeRO-2 only this
  // rank's shard, plus two staging buckets) and moments (two for AdamW,
  // one for SGD's momentum; with ZeRO for this rank's shard). Frozen
  // weights have neither (autodiff builds no gradient for them).
  uint64_t outputs = fn == "train_step" ? 0 : trained;
  uint64_t accumulated = ranks_ > 1 ? (config_.zero == 2 ? own : trained)
                                    : (accumulate > 1 ? trained : 0);
  if (layout_->sharded()) // staging buckets for the reductions and gathers
    accumulated +=
        5 * std::min<uint64_t>(kGatherBucket * sizeof(float), trained);
  uint64_t moments = own * (config_.optimizer == "adamw" ? 2 : 1);
  out.activations = report.arenaBytes + eval.arenaBytes;
  out.state = weights + outputs + accumulated + moments;
  return Status::ok();
}

Status Trainer::checkMemory(const std::map<std::string, int64_t> &dims,
                            int64_t accumulate) {
  MemoryEstimate e;
  if (Status s = estimateMemory(dims, accumulate, e); !s)
    return s;
  uint64_t memory = physicalMemory();
  if (memory && e.total() > memory) {
    std::string shape;
    for (const auto &[name, size] : dims)
      shape += (shape.empty() ? "" : ", ") + name + "=" + std::to_string(size);
    return Status::error(
        "training needs about " + formatBytes(e.total()) + " (" +
        formatBytes(e.activations) + " of activations for a micro-batch of " +
        shape + ", " + formatBytes(e.state) +
        " of weights, gradients and optimizer state), more than this "
        "machine's " +
        formatBytes(memory) + " of memory; use a smaller batch or sequence (" +
        optionRef("--accumulate=K keeps",
                  "several smaller micro-batches per step keep") +
        " the effective batch)");
  }
  return Status::ok();
}

UpdateRule Trainer::ruleFor(double lr) const {
  UpdateRule r;
  r.adamw = config_.optimizer == "adamw";
  r.lr = static_cast<float>(lr);
  r.step = step_;
  r.beta1 = static_cast<float>(config_.beta1);
  r.beta2 = static_cast<float>(config_.beta2);
  r.eps = static_cast<float>(config_.eps);
  r.weightDecay = static_cast<float>(config_.weightDecay);
  r.momentum = static_cast<float>(config_.momentum);
  return r;
}

Status Trainer::evaluate(const std::map<std::string, Tensor> &batch,
                         double &loss) {
  std::vector<Tensor> out;
  if (Status s = model_.run(config_.loss, batch, out); !s)
    return s;
  loss = out[0].as<float>()[0];
  return Status::ok();
}

Status Trainer::optimizerTensors(NamedTensors &t) const {
  OptimizerState *state = nullptr;
  if (Status s = model_.optimizerState(state); !s)
    return s;
  const OptimizerState &st = *state;
  const auto &params = model_.parameters();
  const bool adam = config_.optimizer == "adamw", root = rank() == 0;
  // One moment of parameter i, whole: this process's, or with ZeRO every
  // rank's part gathered on rank 0.
  auto whole = [&](size_t i, const MomentBuffer &part,
                   const std::string &name) -> Status {
    Tensor full;
    if (root)
      full = Tensor(DType::F32, params[i].shape);
    if (layout_->sharded()) {
      Shards parts;
      for (int r = 0; r < ranks_; ++r) {
        auto [lo, hi] = layout_->owned(i, r);
        parts.offsets.push_back(lo);
        parts.counts.push_back(hi - lo);
      }
      if (Status s = config_.communicator->gather(
              part.data(), root ? full.as<float>() : nullptr, parts, 0);
          !s)
        return s;
    } else if (root) {
      std::memcpy(full.data(), part.data(), full.bytes());
    }
    if (root)
      t.emplace_back(name, std::move(full));
    return Status::ok();
  };
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i].trainable)
      continue;
    if (Status s = whole(i, st.m[i],
                         (adam ? "exp_avg/" : "momentum/") + params[i].name);
        !s)
      return s;
    if (adam)
      if (Status s = whole(i, st.v[i], "exp_avg_sq/" + params[i].name); !s)
        return s;
  }
  Tensor step(DType::I64, {});
  step.as<int64_t>()[0] = step_;
  t.emplace_back("step", std::move(step));
  return Status::ok();
}

Status Trainer::onRankZero(const std::function<Status()> &write,
                           const std::string &what) const {
  if (ranks_ <= 1)
    return write();
  // The ranks hold the same state; rank 0 writes it and tells the others
  // how that went, so that all of them return the same.
  Communicator &comm = *config_.communicator;
  Status s = comm.rank() == 0 ? write() : Status::ok();
  char ok = s ? 1 : 0;
  if (Status b = comm.broadcast(&ok, 1, 0); !b)
    return b;
  if (!ok && comm.rank() != 0)
    return Status::error("rank 0 could not write " + what);
  return s;
}

Status Trainer::saveOptimizer(const std::string &path) const {
  NamedTensors t;
  if (Status s = optimizerTensors(t); !s)
    return s;
  return onRankZero([&] { return writeSafetensors(path, t); }, path);
}

Status Trainer::loadOptimizer(const std::string &path) {
  NamedTensors t;
  std::map<std::string, const Tensor *> byName;
  // Two moments (or one momentum) per parameter, and the step.
  if (Status s =
          readByName(path, t, byName, 2 * model_.parameters().size() + 1);
      !s)
    return s;
  // The elements [lo, lo + into.size()) of a moment: all of it, or with
  // ZeRO this rank's part (whatever stage and rank count wrote the file).
  auto take = [&](const std::string &name, const ParameterInfo &p,
                  MomentBuffer &into, size_t lo) -> Status {
    auto it = byName.find(name);
    if (it == byName.end())
      return Status::error(path + ": the optimizer state has no '" + name +
                           "' (was it saved by another optimizer or model?)");
    if (it->second->dtype() != DType::F32 || it->second->shape() != p.shape)
      return Status::error(path + ": '" + name + "' is " +
                           it->second->describe() + ", expected " +
                           shapeString(DType::F32, p.shape));
    if (into.size()) // (a rank whose ZeRO shard misses this parameter)
      std::memcpy(into.data(), it->second->as<float>() + lo,
                  into.size() * sizeof(float));
    byName.erase(it);
    return Status::ok();
  };
  // Into copies first: a bad file leaves the current state untouched.
  OptimizerState *state = nullptr;
  if (Status s = model_.optimizerState(state); !s)
    return s;
  OptimizerState &st = *state;
  std::vector<MomentBuffer> m = st.m, v = st.v;
  const auto &params = model_.parameters();
  bool adam = config_.optimizer == "adamw";
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i].trainable)
      continue;
    size_t lo = layout_->owned(i, rank()).first;
    if (Status s = take((adam ? "exp_avg/" : "momentum/") + params[i].name,
                        params[i], m[i], lo);
        !s)
      return s;
    if (adam)
      if (Status s = take("exp_avg_sq/" + params[i].name, params[i], v[i], lo);
          !s)
        return s;
  }
  auto it = byName.find("step");
  if (it == byName.end() || it->second->dtype() != DType::I64 ||
      it->second->numel() != 1 || it->second->as<int64_t>()[0] < 0)
    return Status::error(path + ": the optimizer state has no valid 'step'");
  int64_t step = it->second->as<int64_t>()[0];
  byName.erase(it);
  if (!byName.empty())
    return Status::error(path + ": unexpected tensor '" +
                         byName.begin()->first + "' in the optimizer state");
  // Into the live buffers (a memory-mapped state stays in its file).
  auto install = [](std::vector<MomentBuffer> &from,
                    std::vector<MomentBuffer> &to) {
    for (size_t i = 0; i < from.size(); ++i)
      if (i < to.size() && to[i].size() == from[i].size())
        std::copy(from[i].data(), from[i].data() + from[i].size(),
                  to[i].data());
      else if (i < to.size())
        to[i] = std::move(from[i]);
  };
  install(m, st.m);
  install(v, st.v);
  step_ = step;
  return Status::ok();
}

Status Trainer::loadWeights(const std::string &path) {
  NamedTensors t;
  // Quantized weights take up to kMaxTensorsPerWeight tensors each.
  if (Status s = readSafetensors(
          path, t, model_.parameters().size() * quant::kMaxTensorsPerWeight);
      !s)
    return s;
  if (Status s = model_.setParameters(t); !s)
    return Status::error(path + ": " + s.text());
  return Status::ok();
}

Status Trainer::saveCheckpoint(const std::string &parent,
                               const std::string &stateJson, int keep) {
  NamedTensors optimizer;
  if (Status s = optimizerTensors(optimizer); !s)
    return s;
  return onRankZero(
      [&] { return writeCheckpoint(parent, stateJson, keep, optimizer); },
      "the checkpoint in " + parent);
}

Status Trainer::writeCheckpoint(const std::string &parent,
                                const std::string &stateJson, int keep,
                                const NamedTensors &optimizer) {
  std::string tmp;
  if (Status s = beginCheckpoint(parent, tmp); !s)
    return s;
  if (Status s = model_.saveWeights(tmp + "/model.safetensors"); !s)
    return s;
  if (Status s = writeSafetensors(tmp + "/optimizer.safetensors", optimizer);
      !s)
    return s;
  if (Status s = writeFileAtomically(tmp + "/trainer_state.json",
                                     {{stateJson.data(), stateJson.size()}});
      !s)
    return s;
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld",
                static_cast<long long>(step_));
  return commitCheckpoint(parent, tmp, name, keep);
}

Status Trainer::loadCheckpoint(const std::string &dir) {
  if (Status s = loadWeights(dir + "/model.safetensors"); !s)
    return s;
  return loadOptimizer(dir + "/optimizer.safetensors");
}
