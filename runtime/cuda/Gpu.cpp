//===- Gpu.cpp - a model's state on the CUDA device -----------------------===//
#include "runtime/cuda/Gpu.h"

#include "runtime/Optimizer.h"
#include "runtime/cuda/Executable.h"

#include <algorithm>

using namespace kiln;
using namespace kiln::runtime;
using namespace kiln::runtime::cuda;

Status Gpu::create(std::shared_ptr<Driver> driver, const kart::Program &program,
                   size_t parameters, std::unique_ptr<Gpu> &out) {
  int e = cudaExecutable(program);
  if (e < 0)
    return Status::error("the artifact has no CUDA kernels; compile it with " +
                         optionRef("--target=cpu,cuda", "target=\"cpu,cuda\"") +
                         " to run it on a GPU");
  const kart::Executable &x = *program.executables()->Get(e);
  std::unique_ptr<Gpu> g(new Gpu());
  g->driver_ = std::move(driver);
  g->model_ = program.model()->str();
  if (Status s = g->driver_->loadModule(x.data()->data(), x.data()->size(),
                                        g->model_, g->module_);
      !s)
    return s;
  g->params_.resize(parameters);
  g->versions_.assign(parameters, UINT64_MAX);
  g->newer_.assign(parameters, false);
  if (Status s = g->error_.reserve(g->driver_, sizeof(long long)); !s)
    return s;
  out = std::move(g);
  return Status::ok();
}

Status Gpu::function(const std::string &entry, void *&fn) {
  auto it = functions_.find(entry);
  if (it != functions_.end()) {
    fn = it->second;
    return Status::ok();
  }
  if (Status s = driver_->function(module_, entry, fn); !s)
    return s;
  functions_[entry] = fn;
  return Status::ok();
}

Status Gpu::parameter(size_t i, const void *host, size_t bytes,
                      uint64_t version, void *&device) {
  if (i >= params_.size())
    return Status::error("parameter " + std::to_string(i) + " out of range");
  if (!params_[i])
    params_[i] = std::make_unique<DeviceBuffer>();
  if (versions_[i] != version || params_[i]->size() < bytes) {
    if (Status s = params_[i]->reserve(driver_, bytes); !s)
      return s;
    if (Status s = driver_->upload(params_[i]->data(), host, bytes); !s)
      return s;
    versions_[i] = version;
  }
  device = params_[i]->data();
  return Status::ok();
}

void Gpu::wroteParameter(size_t i, uint64_t version) {
  if (i >= params_.size() || !params_[i])
    return;
  versions_[i] = version;
  newer_[i] = true;
}

Status Gpu::syncParameter(size_t i, void *host, size_t bytes, bool discard) {
  if (!parameterNewer(i))
    return Status::ok();
  if (!discard)
    if (Status s = driver_->download(host, params_[i]->data(), bytes); !s)
      return s;
  newer_[i] = false;
  return Status::ok();
}

Status Gpu::moments(const OptimizerState &state, int64_t param, int64_t n,
                    bool adamw, float *&m, float *&v) {
  Moments &mo = moments_[param];
  if (mo.n != n || mo.adamw != adamw || !mo.m.data()) {
    size_t bytes = static_cast<size_t>(n) * sizeof(float);
    mo.n = n;
    mo.adamw = adamw;
    size_t i = static_cast<size_t>(param);
    for (int which = 0; which < (adamw ? 2 : 1); ++which) {
      DeviceBuffer &b = which ? mo.v : mo.m;
      const std::vector<MomentBuffer> &host = which ? state.v : state.m;
      if (Status s = b.reserve(driver_, bytes); !s)
        return s;
      Status s = i < host.size() && host[i].size() == static_cast<size_t>(n)
                     ? driver_->upload(b.data(), host[i].data(), bytes)
                     : driver_->zero(b.data(), bytes);
      if (!s)
        return s;
    }
  }
  m = static_cast<float *>(mo.m.data());
  v = adamw ? static_cast<float *>(mo.v.data()) : nullptr;
  return Status::ok();
}

Status Gpu::syncMoments(OptimizerState &state) {
  if (momentsNewer_)
    for (auto &[param, mo] : moments_) {
      size_t i = static_cast<size_t>(param);
      if (state.m.size() <= i)
        state.m.resize(i + 1);
      if (state.v.size() <= i)
        state.v.resize(i + 1);
      for (int which = 0; which < (mo.adamw ? 2 : 1); ++which) {
        MomentBuffer &host = which ? state.v[i] : state.m[i];
        if (host.size() != static_cast<size_t>(mo.n))
          host.assign(static_cast<size_t>(mo.n), 0.0f);
        if (Status s =
                driver_->download(host.data(), (which ? mo.v : mo.m).data(),
                                  static_cast<size_t>(mo.n) * 4);
            !s)
          return s;
      }
    }
  momentsNewer_ = false;
  moments_.clear();
  return Status::ok();
}
