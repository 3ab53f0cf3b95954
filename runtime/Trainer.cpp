//===- Trainer.cpp - training steps on a compiled gradient function -------===//
#include "runtime/Trainer.h"

#include "runtime/Random.h"

#include <algorithm>
#include <cmath>
#include <cstring>

using namespace kiln::runtime;

namespace {
constexpr double kPi = 3.14159265358979323846;

/// Reads a .safetensors file and indexes its tensors by name.
Status readByName(const std::string &path, NamedTensors &tensors,
                  std::map<std::string, const Tensor *> &byName) {
  if (Status s = readSafetensors(path, tensors); !s)
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
  const std::string gradName = config.loss + "_grad";
  const FunctionInfo *grad = findFunction(model, gradName);
  if (!findFunction(model, config.loss) || !grad)
    return Status::error("the artifact has no '" + gradName +
                         "' function to train with; compile it with "
                         "--grad=" +
                         config.loss);
  const auto &params = model.parameters();
  if (grad->outputs.size() != params.size() + 1)
    return Status::error("'" + gradName + "' returns " +
                         std::to_string(grad->outputs.size()) +
                         " values; expected the loss and one gradient for "
                         "each of the " +
                         std::to_string(params.size()) + " parameters");
  std::unique_ptr<Trainer> t(new Trainer(model, config));
  for (const ParameterInfo &p : params) {
    if (p.dtype != DType::F32)
      return Status::error("parameter '" + p.name +
                           "' is not f32; kiln trains f32 parameters");
    size_t n = 1;
    for (int64_t d : p.shape)
      n *= static_cast<size_t>(d);
    t->sizes_.push_back(n);
    t->m_.emplace_back(n, 0.0f);
    if (config.optimizer == "adamw")
      t->v_.emplace_back(n, 0.0f);
  }
  out = std::move(t);
  return Status::ok();
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
  if (microBatches.empty())
    return Status::error("a training step needs at least one micro-batch");
  const auto &params = model_.parameters();
  size_t np = params.size();
  double lossSum = 0;
  size_t nmb = microBatches.size();
  float inv = 1.0f / static_cast<float>(nmb);
  if (nmb > 1 && grads_.size() != np)
    for (size_t i = 0; i < np; ++i)
      grads_.emplace_back(sizes_[i], 0.0f);
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
    if (Status s =
            model_.run(config_.loss + "_grad", microBatches[mb], out, run);
        !s)
      return s;
    double loss = out[0].as<float>()[0];
    if (!std::isfinite(loss))
      return Status::error("the loss is " + std::to_string(loss) + " at step " +
                           std::to_string(step_ + 1) + " (micro-batch " +
                           std::to_string(mb) +
                           "); lower the learning rate or check the data");
    lossSum += loss;
    for (size_t i = 0; i < np; ++i) {
      const float *g = out[i + 1].as<float>();
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
  // The global norm: fixed chunks summed in parallel, then in order, so the
  // result does not depend on the thread count.
  const int64_t chunk = 1 << 16;
  std::vector<std::pair<size_t, int64_t>> chunks; // (parameter, start)
  for (size_t i = 0; i < np; ++i)
    for (int64_t s = 0; s < static_cast<int64_t>(sizes_[i]); s += chunk)
      chunks.push_back({i, s});
  std::vector<double> partial(chunks.size());
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t c = 0; c < static_cast<int64_t>(chunks.size()); ++c) {
    auto [i, s] = chunks[c];
    int64_t e = std::min<int64_t>(s + chunk, sizes_[i]);
    double acc = 0;
    for (int64_t j = s; j < e; ++j)
      acc += static_cast<double>(grad[i][j]) * grad[i][j];
    partial[c] = acc;
  }
  double sq = 0;
  for (double p : partial)
    sq += p;
  double norm = std::sqrt(sq);
  float clip = 1.0f;
  if (config_.clipNorm > 0 && norm > config_.clipNorm)
    clip = static_cast<float>(config_.clipNorm / (norm + 1e-6));

  double lr = learningRate(step_);
  ++step_;
  const float flr = static_cast<float>(lr);
  if (config_.optimizer == "adamw") {
    const float b1 = static_cast<float>(config_.beta1),
                b2 = static_cast<float>(config_.beta2),
                eps = static_cast<float>(config_.eps);
    // As torch.optim.AdamW: p *= 1 - lr wd; p -= lr/bc1 m / (sqrt(v)/sqrt(bc2)
    // + eps).
    double bc1 = 1.0 - std::pow(config_.beta1, static_cast<double>(step_));
    double bc2 = 1.0 - std::pow(config_.beta2, static_cast<double>(step_));
    const float stepSize = static_cast<float>(lr / bc1);
    const float bc2Sqrt = static_cast<float>(std::sqrt(bc2));
    for (size_t i = 0; i < np; ++i) {
      float *p = model_.parameterData(i);
      float *m = m_[i].data(), *v = v_[i].data();
      const float *g = grad[i];
      float decay = params[i].shape.size() >= 2
                        ? 1.0f - flr * static_cast<float>(config_.weightDecay)
                        : 1.0f;
      int64_t n = static_cast<int64_t>(sizes_[i]);
#pragma omp parallel for if (n > 65536)
      for (int64_t j = 0; j < n; ++j) {
        float gj = g[j] * clip;
        p[j] *= decay;
        m[j] = b1 * m[j] + (1.0f - b1) * gj;
        v[j] = b2 * v[j] + (1.0f - b2) * gj * gj;
        p[j] -= stepSize * m[j] / (std::sqrt(v[j]) / bc2Sqrt + eps);
      }
    }
  } else {
    // As torch.optim.SGD: g += wd p; buf = mu buf + g (buf = g at first);
    // p -= lr buf.
    const float mu = static_cast<float>(config_.momentum);
    bool first = step_ == 1;
    for (size_t i = 0; i < np; ++i) {
      float *p = model_.parameterData(i);
      float *buf = m_[i].data();
      const float *g = grad[i];
      float wd = params[i].shape.size() >= 2
                     ? static_cast<float>(config_.weightDecay)
                     : 0.0f;
      int64_t n = static_cast<int64_t>(sizes_[i]);
#pragma omp parallel for if (n > 65536)
      for (int64_t j = 0; j < n; ++j) {
        float gj = g[j] * clip + wd * p[j];
        buf[j] = first || mu == 0.0f ? gj : mu * buf[j] + gj;
        p[j] -= flr * buf[j];
      }
    }
  }
  stats.loss = lossSum / static_cast<double>(microBatches.size());
  stats.lr = lr;
  stats.gradNorm = norm;
  return Status::ok();
}

Status Trainer::evaluate(const std::map<std::string, Tensor> &batch,
                         double &loss) {
  std::vector<Tensor> out;
  if (Status s = model_.run(config_.loss, batch, out); !s)
    return s;
  loss = out[0].as<float>()[0];
  return Status::ok();
}

Status Trainer::saveOptimizer(const std::string &path) const {
  NamedTensors t;
  const auto &params = model_.parameters();
  bool adam = config_.optimizer == "adamw";
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor m(DType::F32, params[i].shape);
    std::memcpy(m.data(), m_[i].data(), m.bytes());
    t.emplace_back((adam ? "exp_avg/" : "momentum/") + params[i].name,
                   std::move(m));
    if (adam) {
      Tensor v(DType::F32, params[i].shape);
      std::memcpy(v.data(), v_[i].data(), v.bytes());
      t.emplace_back("exp_avg_sq/" + params[i].name, std::move(v));
    }
  }
  Tensor step(DType::I64, {});
  step.as<int64_t>()[0] = step_;
  t.emplace_back("step", std::move(step));
  return writeSafetensors(path, t);
}

Status Trainer::loadOptimizer(const std::string &path) {
  NamedTensors t;
  std::map<std::string, const Tensor *> byName;
  if (Status s = readByName(path, t, byName); !s)
    return s;
  auto take = [&](const std::string &name, const ParameterInfo &p,
                  std::vector<float> &into) -> Status {
    auto it = byName.find(name);
    if (it == byName.end())
      return Status::error(path + ": the optimizer state has no '" + name +
                           "' (was it saved by another optimizer or model?)");
    if (it->second->dtype() != DType::F32 || it->second->shape() != p.shape)
      return Status::error(path + ": '" + name + "' is " +
                           it->second->describe() + ", expected " +
                           shapeString(DType::F32, p.shape));
    std::memcpy(into.data(), it->second->data(), it->second->bytes());
    byName.erase(it);
    return Status::ok();
  };
  // Into copies first: a bad file leaves the current state untouched.
  std::vector<std::vector<float>> m = m_, v = v_;
  const auto &params = model_.parameters();
  bool adam = config_.optimizer == "adamw";
  for (size_t i = 0; i < params.size(); ++i) {
    if (Status s = take((adam ? "exp_avg/" : "momentum/") + params[i].name,
                        params[i], m[i]);
        !s)
      return s;
    if (adam)
      if (Status s = take("exp_avg_sq/" + params[i].name, params[i], v[i]); !s)
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
  m_ = std::move(m);
  v_ = std::move(v);
  step_ = step;
  return Status::ok();
}

Status Trainer::loadWeights(const std::string &path) {
  NamedTensors t;
  std::map<std::string, const Tensor *> byName;
  if (Status s = readByName(path, t, byName); !s)
    return s;
  // Check everything before copying anything.
  const auto &params = model_.parameters();
  std::vector<const Tensor *> source;
  for (size_t i = 0; i < params.size(); ++i) {
    auto it = byName.find(params[i].name);
    if (it == byName.end())
      return Status::error(path + ": missing parameter '" + params[i].name +
                           "'");
    if (it->second->dtype() != params[i].dtype ||
        it->second->shape() != params[i].shape)
      return Status::error(path + ": parameter '" + params[i].name + "' is " +
                           it->second->describe() + ", the model expects " +
                           shapeString(params[i].dtype, params[i].shape));
    source.push_back(it->second);
    byName.erase(it);
  }
  if (!byName.empty())
    return Status::error(path + ": '" + byName.begin()->first +
                         "' is not a parameter of the model");
  for (size_t i = 0; i < params.size(); ++i)
    std::memcpy(model_.parameterData(i), source[i]->data(), source[i]->bytes());
  return Status::ok();
}
