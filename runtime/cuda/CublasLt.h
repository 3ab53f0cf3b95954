//===- CublasLt.h - matrix products on cuBLASLt -----------------*- C++ -*-===//
//
// The CUDA device's BLAS: cuBLASLt, opened with dlopen (like the driver) so
// the runtime builds and runs where no CUDA toolkit is installed. Where it
// cannot be loaded, the device multiplies on kiln's own kernel and says so
// in its description. Products run in full f32 (CUBLAS_COMPUTE_32F, as
// PyTorch's default), with the bias and ReLU epilogues fused.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_CUDA_CUBLASLT_H
#define KILN_RUNTIME_CUDA_CUBLASLT_H

#include "runtime/Tensor.h"
#include "runtime/cuda/CublasLtApi.h"
#include "runtime/cuda/Driver.h"
#include "runtime/cuda/Gemm.h"

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kiln::runtime::cuda {

class CublasLt {
public:
  /// The libraries to try, in order: $KILN_CUBLASLT (a path to the
  /// library, or "off" for none), else libcublasLt.so.13, .so.12 and .so
  /// on the loader's path.
  static std::vector<std::string> candidates();
  /// Loads the first of `paths` that opens and has every entry point kiln
  /// uses; needs no GPU. The error lists what each path said.
  static Status load(const std::vector<std::string> &paths,
                     std::unique_ptr<CublasLt> &out);
  ~CublasLt();
  CublasLt(const CublasLt &) = delete;
  CublasLt &operator=(const CublasLt &) = delete;

  /// "cuBLASLt 13.1.0".
  std::string describe() const;
  /// Creates the library's handle and a workspace on `driver`'s GPU (whose
  /// context is current on this thread).
  Status start(Driver &driver);

  /// The descriptors of one call, released with it.
  struct Descriptors {
    const lt::Api *api = nullptr;
    lt::MatmulDesc desc = nullptr;
    lt::Layout a = nullptr, b = nullptr, c = nullptr, d = nullptr;
    Descriptors() = default;
    Descriptors(const Descriptors &) = delete;
    Descriptors &operator=(const Descriptors &) = delete;
    ~Descriptors();
  };
  /// Describes `call` to the library (host only: no GPU needed); an error
  /// names the attribute the library refused.
  Status prepare(const GemmCall &call, Descriptors &out) const;
  /// Runs `call` on `stream` (a CUstream), after start().
  Status gemm(const GemmCall &call, void *stream);

private:
  CublasLt() = default;
  Status check(lt::Status s, const std::string &what) const;

  void *lib_ = nullptr;
  lt::Api api_{};
  lt::Handle handle_ = nullptr;
  Driver *driver_ = nullptr;
  void *workspace_ = nullptr;
  size_t workspaceBytes_ = 0;
  /// The heuristic's algorithm by the call's shape, layout and alignment.
  using Key = std::array<int64_t, 16>;
  std::map<Key, lt::HeuristicResult> algorithms_;
  std::mutex mutex_;
};

} // namespace kiln::runtime::cuda

#endif
