//===- Gpu.h - a model's state on the CUDA device ---------------*- C++ -*-===//
//
// What one model keeps on a GPU between calls (Model::useCuda): the driver,
// the artifact's loaded fatbin and its kernels by name, device copies of
// the parameters (uploaded when the host's copy changed: the model's
// parameter versions say when; downloaded only when the host reads a copy
// a train step wrote), optimizer moments for compiled train steps, and the
// error word kernels report bad indices in. Calls on one model's
// GPU run one at a time (one stream). runtime/cuda/Execute.cpp runs a
// function's kernels with it.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_CUDA_GPU_H
#define KILN_RUNTIME_CUDA_GPU_H

#include "runtime/cuda/Driver.h"
#include "runtime/kart_generated.h"

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kiln::runtime {
struct OptimizerState;
}

namespace kiln::runtime::cuda {

class Gpu {
public:
  /// Loads `program`'s CUDA executable on `driver`'s GPU.
  static Status create(std::shared_ptr<Driver> driver,
                       const kart::Program &program, size_t parameters,
                       std::unique_ptr<Gpu> &out);

  Driver &driver() const { return *driver_; }
  const std::shared_ptr<Driver> &shared() const { return driver_; }
  const std::string &model() const { return model_; }
  /// One call at a time on this model's GPU.
  std::mutex &mutex() { return mutex_; }

  /// The kernel `entry` of the artifact's fatbin.
  Status function(const std::string &entry, void *&fn);
  /// The device copy of parameter `i` (`bytes` at `host`), uploaded when
  /// `version` differs from the one on the device.
  Status parameter(size_t i, const void *host, size_t bytes, uint64_t version,
                   void *&device);
  /// A call (a compiled train step) wrote parameter `i` on the device:
  /// the device's copy is `version` and newer than the host's, which
  /// syncParameter brings up to date when the host reads it. Training on
  /// the GPU thus copies weights only when they are read (a checkpoint,
  /// Model::parameter) or written on the host, not at every step.
  void wroteParameter(size_t i, uint64_t version);
  /// Whether the device holds a newer copy of parameter `i` than the host.
  bool parameterNewer(size_t i) const { return i < newer_.size() && newer_[i]; }
  /// Downloads parameter `i` into `host` (`bytes`) if the device's copy is
  /// newer; `discard`: the host is about to overwrite it entirely, so
  /// nothing is copied and the device's copy is simply dropped.
  Status syncParameter(size_t i, void *host, size_t bytes,
                       bool discard = false);
  /// The device moments of parameter `param` (`n` floats each), starting
  /// from the host's `state` (zero where it has none).
  Status moments(const OptimizerState &state, int64_t param, int64_t n,
                 bool adamw, float *&m, float *&v);
  /// A train step updated the device moments: they are newer than the
  /// host's until syncMoments.
  void wroteMoments() { momentsNewer_ = !moments_.empty(); }
  /// Copies the device moments into `state` if they are newer, then
  /// forgets them: the host may change `state` (a resumed checkpoint, a
  /// new trainer), so the next step uploads it again.
  Status syncMoments(OptimizerState &state);
  /// The word kernels write a bad index's position (plus one) to.
  long long *errorWord() const {
    return static_cast<long long *>(error_.data());
  }

private:
  Gpu() = default;
  std::shared_ptr<Driver> driver_;
  std::string model_;
  void *module_ = nullptr;
  std::map<std::string, void *> functions_;
  std::vector<std::unique_ptr<DeviceBuffer>> params_;
  std::vector<uint64_t> versions_;
  std::vector<bool> newer_; // the device's copy is newer than the host's
  struct Moments {
    DeviceBuffer m, v;
    int64_t n = 0;
    bool adamw = false;
  };
  std::map<int64_t, Moments> moments_;
  bool momentsNewer_ = false;
  DeviceBuffer error_;
  std::mutex mutex_;
};

} // namespace kiln::runtime::cuda

#endif
