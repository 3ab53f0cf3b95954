//===- Driver.cpp - the NVIDIA driver through dlopen ----------------------===//
#include "runtime/cuda/Driver.h"

#include "runtime/Memory.h"
#include "runtime/cuda/CublasLt.h"

#include <dlfcn.h>

#include <cstdint>
#include <mutex>

using namespace kiln;
using namespace kiln::runtime;
using namespace kiln::runtime::cuda;

Status DeviceBuffer::reserve(const std::shared_ptr<Driver> &driver,
                             size_t bytes) {
  if (ptr_ && size_ >= bytes && driver_ == driver)
    return Status::ok();
  reset();
  if (bytes == 0)
    bytes = 256;
  if (Status s = driver->allocate(bytes, ptr_); !s)
    return s;
  driver_ = driver;
  size_ = bytes;
  return Status::ok();
}

void DeviceBuffer::reset() {
  if (ptr_ && driver_)
    driver_->release(ptr_);
  ptr_ = nullptr;
  size_ = 0;
}

Status Driver::gemm(const GemmCall &) {
  return Status::error("this CUDA driver has no BLAS library: " +
                       blasMissing());
}

Status Driver::newEvent(void *&) {
  return Status::error("this CUDA driver cannot time kernels");
}
void Driver::freeEvent(void *) {}
Status Driver::mark(void *) {
  return Status::error("this CUDA driver cannot time kernels");
}
Status Driver::elapsedMs(void *, void *, float &) {
  return Status::error("this CUDA driver cannot time kernels");
}

namespace {

// The driver API's types, as cuda.h declares them (the runtime does not
// need the toolkit's headers).
using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = void *;
using CUmodule = void *;
using CUfunction = void *;
using CUstream = void *;
using CUevent = void *;
constexpr int kComputeMajor = 75, kComputeMinor = 76; // CUdevice_attribute

/// The driver's entry points, resolved from libcuda.so.1.
struct Api {
  CUresult (*init)(unsigned);
  CUresult (*deviceGetCount)(int *);
  CUresult (*deviceGet)(CUdevice *, int);
  CUresult (*deviceGetName)(char *, int, CUdevice);
  CUresult (*deviceGetAttribute)(int *, int, CUdevice);
  CUresult (*deviceTotalMem)(size_t *, CUdevice);
  CUresult (*primaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*primaryCtxRelease)(CUdevice);
  CUresult (*ctxSetCurrent)(CUcontext);
  CUresult (*streamCreate)(CUstream *, unsigned);
  CUresult (*streamDestroy)(CUstream);
  CUresult (*streamSynchronize)(CUstream);
  CUresult (*memAlloc)(CUdeviceptr *, size_t);
  CUresult (*memFree)(CUdeviceptr);
  CUresult (*memcpyHtoDAsync)(CUdeviceptr, const void *, size_t, CUstream);
  CUresult (*memcpyDtoHAsync)(void *, CUdeviceptr, size_t, CUstream);
  CUresult (*memsetD8Async)(CUdeviceptr, unsigned char, size_t, CUstream);
  CUresult (*moduleLoadData)(CUmodule *, const void *);
  CUresult (*moduleUnload)(CUmodule);
  CUresult (*moduleGetFunction)(CUfunction *, CUmodule, const char *);
  CUresult (*launchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned,
                           unsigned, unsigned, unsigned, CUstream, void **,
                           void **);
  CUresult (*getErrorString)(CUresult, const char **);
  // Optional: profiles only.
  CUresult (*eventCreate)(CUevent *, unsigned);
  CUresult (*eventDestroy)(CUevent);
  CUresult (*eventRecord)(CUevent, CUstream);
  CUresult (*eventElapsedTime)(float *, CUevent, CUevent);
};

template <typename F> bool resolve(void *lib, const char *name, F &fn) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  return fn != nullptr;
}

class NvidiaDriver final : public Driver {
public:
  Status open(int ordinal) {
    // The library stays loaded for the process (unloading a driver that
    // has run kernels is not safe).
    lib_ = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib_) {
      const char *why = dlerror();
      return Status::error(std::string("no CUDA driver on this machine (") +
                           (why ? why : "libcuda.so.1 not found") +
                           "); the CUDA device needs the NVIDIA driver");
    }
    const char *missing = nullptr;
    auto need = [&](const char *name, auto &fn) {
      if (!resolve(lib_, name, fn) && !missing)
        missing = name;
    };
    need("cuInit", api_.init);
    need("cuDeviceGetCount", api_.deviceGetCount);
    need("cuDeviceGet", api_.deviceGet);
    need("cuDeviceGetName", api_.deviceGetName);
    need("cuDeviceGetAttribute", api_.deviceGetAttribute);
    need("cuDeviceTotalMem_v2", api_.deviceTotalMem);
    need("cuDevicePrimaryCtxRetain", api_.primaryCtxRetain);
    need("cuDevicePrimaryCtxRelease_v2", api_.primaryCtxRelease);
    need("cuCtxSetCurrent", api_.ctxSetCurrent);
    need("cuStreamCreate", api_.streamCreate);
    need("cuStreamDestroy_v2", api_.streamDestroy);
    need("cuStreamSynchronize", api_.streamSynchronize);
    need("cuMemAlloc_v2", api_.memAlloc);
    need("cuMemFree_v2", api_.memFree);
    need("cuMemcpyHtoDAsync_v2", api_.memcpyHtoDAsync);
    need("cuMemcpyDtoHAsync_v2", api_.memcpyDtoHAsync);
    need("cuMemsetD8Async", api_.memsetD8Async);
    need("cuModuleLoadData", api_.moduleLoadData);
    need("cuModuleUnload", api_.moduleUnload);
    need("cuModuleGetFunction", api_.moduleGetFunction);
    need("cuLaunchKernel", api_.launchKernel);
    need("cuGetErrorString", api_.getErrorString);
    if (missing)
      return Status::error(std::string("the CUDA driver lacks ") + missing +
                           " (a driver older than kiln needs?)");
    resolve(lib_, "cuEventCreate", api_.eventCreate);
    resolve(lib_, "cuEventDestroy_v2", api_.eventDestroy);
    resolve(lib_, "cuEventRecord", api_.eventRecord);
    if (!resolve(lib_, "cuEventElapsedTime_v2", api_.eventElapsedTime))
      resolve(lib_, "cuEventElapsedTime", api_.eventElapsedTime);
    if (Status s = check(api_.init(0), "cuInit"); !s)
      return s;
    int count = 0;
    if (Status s = check(api_.deviceGetCount(&count), "cuDeviceGetCount"); !s)
      return s;
    if (ordinal < 0 || ordinal >= count)
      return Status::error(count == 0
                               ? std::string("the CUDA driver sees no GPU")
                               : "GPU " + std::to_string(ordinal) +
                                     " does not exist; this machine has " +
                                     std::to_string(count));
    if (Status s = check(api_.deviceGet(&device_, ordinal), "cuDeviceGet"); !s)
      return s;
    if (Status s = check(api_.primaryCtxRetain(&context_, device_),
                         "cuDevicePrimaryCtxRetain");
        !s)
      return s;
    if (Status s = current(); !s)
      return s;
    if (Status s = check(api_.streamCreate(&stream_, 0), "cuStreamCreate"); !s)
      return s;
    char name[256] = {};
    api_.deviceGetName(name, sizeof name - 1, device_);
    int major = 0, minor = 0;
    api_.deviceGetAttribute(&major, kComputeMajor, device_);
    api_.deviceGetAttribute(&minor, kComputeMinor, device_);
    size_t memory = 0;
    api_.deviceTotalMem(&memory, device_);
    capability_ = major * 10 + minor;
    describe_ = std::string(name) + ", sm_" + std::to_string(capability_) +
                ", " + formatBytes(memory);
    // Without cuBLASLt, products run on kiln's kernel: not an error.
    if (Status s = CublasLt::load(CublasLt::candidates(), blas_); !s)
      blasMissing_ = s.message();
    else if (Status s = blas_->start(*this); !s) {
      blasMissing_ = s.message();
      blas_.reset();
    }
    return Status::ok();
  }
  ~NvidiaDriver() override {
    if (blas_) {
      current();
      blas_.reset();
    }
    if (stream_) {
      current();
      api_.streamDestroy(stream_);
    }
    if (context_)
      api_.primaryCtxRelease(device_);
  }

  std::string describe() const override { return describe_; }
  int computeCapability() const override { return capability_; }
  std::string blas() const override {
    return blas_ ? blas_->describe() : std::string();
  }
  std::string blasMissing() const override { return blasMissing_; }
  Status gemm(const GemmCall &call) override {
    if (!blas_)
      return Driver::gemm(call);
    if (Status s = current(); !s)
      return s;
    return blas_->gemm(call, stream_);
  }

  Status allocate(size_t bytes, void *&ptr) override {
    CUdeviceptr p = 0;
    if (Status s = current(); !s)
      return s;
    if (Status s = check(api_.memAlloc(&p, bytes),
                         "allocating " + formatBytes(bytes) + " on the GPU");
        !s)
      return s;
    ptr = reinterpret_cast<void *>(static_cast<uintptr_t>(p));
    return Status::ok();
  }
  void release(void *ptr) override {
    if (ptr && current())
      api_.memFree(static_cast<CUdeviceptr>(reinterpret_cast<uintptr_t>(ptr)));
  }
  Status upload(void *device, const void *host, size_t bytes) override {
    if (Status s = current(); !s)
      return s;
    return check(api_.memcpyHtoDAsync(address(device), host, bytes, stream_),
                 "copying to the GPU");
  }
  Status download(void *host, const void *device, size_t bytes) override {
    if (Status s = current(); !s)
      return s;
    if (Status s =
            check(api_.memcpyDtoHAsync(host, address(device), bytes, stream_),
                  "copying from the GPU");
        !s)
      return s;
    return synchronize();
  }
  Status zero(void *device, size_t bytes) override {
    if (Status s = current(); !s)
      return s;
    return check(api_.memsetD8Async(address(device), 0, bytes, stream_),
                 "clearing GPU memory");
  }
  Status synchronize() override {
    return check(api_.streamSynchronize(stream_), "running on the GPU");
  }
  Status loadModule(const void *fatbin, size_t, const std::string &,
                    void *&module) override {
    if (Status s = current(); !s)
      return s;
    CUmodule m = nullptr;
    if (Status s = check(api_.moduleLoadData(&m, fatbin),
                         "loading the artifact's CUDA kernels (is this GPU "
                         "older than sm_80?)");
        !s)
      return s;
    module = m;
    return Status::ok();
  }
  Status function(void *module, const std::string &entry, void *&fn) override {
    CUfunction f = nullptr;
    if (Status s = check(api_.moduleGetFunction(&f, module, entry.c_str()),
                         "finding kernel '" + entry + "' in the artifact");
        !s)
      return s;
    fn = f;
    return Status::ok();
  }
  Status launch(void *fn, unsigned grid, unsigned block, const void *args,
                size_t) override {
    void *params[] = {const_cast<void *>(args)};
    return check(api_.launchKernel(fn, grid, 1, 1, block, 1, 1, 0, stream_,
                                   params, nullptr),
                 "launching a kernel");
  }

  Status newEvent(void *&event) override {
    if (!timers())
      return Driver::newEvent(event);
    if (Status s = current(); !s)
      return s;
    CUevent e = nullptr;
    if (Status s = check(api_.eventCreate(&e, 0), "creating an event"); !s)
      return s;
    event = e;
    return Status::ok();
  }
  void freeEvent(void *event) override {
    if (event && timers())
      api_.eventDestroy(event);
  }
  Status mark(void *event) override {
    if (!timers())
      return Driver::mark(event);
    return check(api_.eventRecord(event, stream_), "recording an event");
  }
  Status elapsedMs(void *from, void *to, float &ms) override {
    if (!timers())
      return Driver::elapsedMs(from, to, ms);
    return check(api_.eventElapsedTime(&ms, from, to), "timing kernels");
  }

private:
  bool timers() const {
    return api_.eventCreate && api_.eventDestroy && api_.eventRecord &&
           api_.eventElapsedTime;
  }
  static CUdeviceptr address(const void *p) {
    return static_cast<CUdeviceptr>(reinterpret_cast<uintptr_t>(p));
  }
  /// Makes the context current on the calling thread (calls come from any
  /// thread).
  Status current() const {
    return check(api_.ctxSetCurrent(context_), "cuCtxSetCurrent");
  }
  Status check(CUresult r, const std::string &what) const {
    if (r == 0)
      return Status::ok();
    const char *text = nullptr;
    if (api_.getErrorString)
      api_.getErrorString(r, &text);
    return Status::error("CUDA error " + std::to_string(r) + " " + what +
                         (text ? std::string(": ") + text : std::string()));
  }

  void *lib_ = nullptr;
  Api api_{};
  CUdevice device_ = 0;
  CUcontext context_ = nullptr;
  CUstream stream_ = nullptr;
  int capability_ = 0;
  std::string describe_;
  std::unique_ptr<CublasLt> blas_;
  std::string blasMissing_;
};

} // namespace

Status cuda::openCudaDriver(int ordinal, std::shared_ptr<Driver> &out) {
  auto d = std::make_shared<NvidiaDriver>();
  if (Status s = d->open(ordinal); !s)
    return s;
  out = std::move(d);
  return Status::ok();
}
