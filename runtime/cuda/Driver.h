//===- Driver.h - the CUDA driver, as kiln uses it --------------*- C++ -*-===//
//
// The few driver operations the CUDA device needs — device memory, copies,
// loading an artifact's fatbin, launching its kernels on a stream — behind
// an interface with two implementations: the NVIDIA driver itself, loaded
// with dlopen("libcuda.so.1") so the runtime builds, links and runs where
// no GPU or driver exists (openCudaDriver says why it cannot open one), and
// the tests' emulation (test/cuda), which runs the generated kernels on the
// CPU so the whole device path is checked without a GPU.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_CUDA_DRIVER_H
#define KILN_RUNTIME_CUDA_DRIVER_H

#include "runtime/Tensor.h"
#include "runtime/cuda/Gemm.h"

#include <cstddef>
#include <memory>
#include <string>

namespace kiln::runtime::cuda {

class Driver {
public:
  virtual ~Driver() = default;
  /// The device, in words ("NVIDIA H200, sm_90, 139 GiB").
  virtual std::string describe() const = 0;
  /// Compute capability as major * 10 + minor (90 for sm_90).
  virtual int computeCapability() const = 0;

  /// Device memory; `release` takes what `allocate` gave.
  virtual Status allocate(size_t bytes, void *&ptr) = 0;
  virtual void release(void *ptr) = 0;
  /// Copies and fills on the device's stream, in order with the launches.
  virtual Status upload(void *device, const void *host, size_t bytes) = 0;
  virtual Status download(void *host, const void *device, size_t bytes) = 0;
  virtual Status zero(void *device, size_t bytes) = 0;
  /// Waits for everything issued so far.
  virtual Status synchronize() = 0;

  /// Loads a fatbin (the artifact's executable for model `model`) and
  /// finds its kernels by name.
  virtual Status loadModule(const void *fatbin, size_t bytes,
                            const std::string &model, void *&module) = 0;
  virtual Status function(void *module, const std::string &entry,
                          void *&fn) = 0;
  /// Launches `fn` over `grid` blocks of `block` threads with one argument
  /// block of `size` bytes at `args`.
  virtual Status launch(void *fn, unsigned grid, unsigned block,
                        const void *args, size_t size) = 0;

  /// The library matrix products go to ("cuBLASLt 13.1.0"), or "" when
  /// none could be loaded (`blasMissing` says why) and kiln's own kernel
  /// multiplies.
  virtual std::string blas() const { return ""; }
  virtual std::string blasMissing() const { return "no BLAS library"; }
  /// Runs one product on the stream, in order with the launches.
  virtual Status gemm(const GemmCall &call);

  /// Timestamps on the stream, for per-kernel profiles (CUDA events):
  /// `mark` records `event` in order with the launches; `elapsedMs` reads
  /// the time between two marks once the stream has passed both.
  virtual Status newEvent(void *&event);
  virtual void freeEvent(void *event);
  virtual Status mark(void *event);
  virtual Status elapsedMs(void *from, void *to, float &ms);
};

/// The NVIDIA driver (libcuda.so.1) on GPU `ordinal`, or an error that says
/// why not: no driver library, no GPU, a failed initialization.
Status openCudaDriver(int ordinal, std::shared_ptr<Driver> &out);

/// Device memory released with its driver.
class DeviceBuffer {
public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;
  /// At least `bytes` (contents unspecified when it grows).
  Status reserve(const std::shared_ptr<Driver> &driver, size_t bytes);
  void reset();
  void *data() const { return ptr_; }
  size_t size() const { return size_; }

private:
  std::shared_ptr<Driver> driver_;
  void *ptr_ = nullptr;
  size_t size_ = 0;
};

} // namespace kiln::runtime::cuda

#endif
