//===- Launch.h - the launches of kiln's CUDA kernels -----------*- C++ -*-===//
//
// How each kernel of an artifact runs on a GPU: which generated or library
// kernels it launches, over which grid, with which argument blocks
// (runtime/cuda/KernelAbi.h) and scratch memory. One place decides this
// for the CUDA device (driver launches on a stream) and for the tests that
// run the generated source on the CPU (test/cuda/Emulation.h), so the
// emulated runs check the very launches a GPU gets.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_CUDA_LAUNCH_H
#define KILN_RUNTIME_CUDA_LAUNCH_H

#include "runtime/Kernels.h"
#include "runtime/cuda/Gemm.h"

#include <cstddef>
#include <string>

namespace kiln::runtime::cuda {

/// Where launches go: a CUDA stream, or the emulation.
class Launcher {
public:
  virtual ~Launcher() = default;
  /// Runs kernel `entry` over `grid` blocks of `block` threads with the
  /// argument block at `args` (`size` bytes, one of KernelAbi.h's structs).
  virtual Status launch(const std::string &entry, unsigned grid, unsigned block,
                        const void *args, size_t size) = 0;
  /// Device memory of at least `bytes` (aligned to 256) that the launches
  /// of the current kernel may use; reused by the next kernel.
  virtual void *scratch(size_t bytes) = 0;
  /// Copies `bytes` from the host to device memory, in order with the
  /// launches (for tables the host computes exactly, like T5's buckets).
  virtual Status upload(void *device, const void *host, size_t bytes) = 0;
  /// A device word, zero before the function runs, where kernels report
  /// the position of a bad index (plus one); read after the function.
  virtual long long *errorWord() = 0;
  /// Threads per block (KILN_CUDA_BLOCK on a GPU; tests use fewer) and
  /// the most blocks of a grid (kernels loop over what is left).
  virtual unsigned blockSize() const;
  virtual unsigned maxGrid() const;
  /// The optimizer moments of parameter `param` (`n` elements; `v` only
  /// for AdamW), zero before its first update: device memory the launcher
  /// keeps across calls.
  virtual Status moments(int64_t param, int64_t n, bool adamw, float *&m,
                         float *&v);
  /// Whether matrix products go to a BLAS library (`gemm`, in order with
  /// the launches); when not, they run on kiln's own tiled kernel.
  virtual bool hasGemm() const { return false; }
  virtual Status gemm(const GemmCall &call);
};

/// The name of the generated kernel for kernel `index` of `function`: a
/// fused elementwise program or a single elementwise op.
std::string elementwiseEntry(const std::string &model,
                             const std::string &function, size_t index);

/// True for the kernels that run as a generated elementwise kernel.
bool isGeneratedElementwise(const kart::Kernel &k);

/// Why the CUDA backend cannot run kernel `k` yet, or "" when it can.
std::string unsupportedReason(const kart::Kernel &k);

/// Launches kernel `index` of `function` of `model` on the operands in
/// `ctx` (device addresses): the fast path is the only one.
Status launchKernel(const KernelContext &ctx, const std::string &model,
                    const std::string &function, size_t index, Launcher &l);

} // namespace kiln::runtime::cuda

#endif
