//===- CudaTarget.h - CUDA executables in an artifact -----------*- C++ -*-===//
//
// `kiln compile --target=cuda` (or cpu,cuda): the artifact's CUDA source
// (codegen/CudaEmitter.h) compiled by nvcc into a fatbin with code for
// sm_80 and sm_90 and PTX for newer GPUs to JIT, stored in the artifact's
// executable table with the ABI version, architectures, entry points and
// threads per block. With the CUDA target alone every kernel names the
// executable (device CUDA), so the artifact runs on a GPU only; with both,
// the kernels stay the CPU's and the GPU is a choice at run time.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_CODEGEN_CUDATARGET_H
#define KILN_CODEGEN_CUDATARGET_H

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kiln {

struct CudaTargetOptions {
  /// Only the CUDA target: every kernel runs on the CUDA device.
  bool cudaOnly = false;
  /// Progress lines ("compiling 31 kernels with nvcc ...").
  std::function<void(const std::string &)> note;
};

/// The architectures the fatbin holds: SASS for each, PTX of the last.
const std::vector<std::string> &cudaArchitectures();

/// nvcc: $KILN_NVCC, /usr/local/cuda/bin/nvcc or the PATH's; "" when none
/// (then `looked` says where it looked).
std::string findNvcc(std::string &looked);

/// Compiles the CUDA source of `artifact` and stores the fatbin in it.
/// False, with `error`, when a kernel cannot run on CUDA (with the CUDA
/// target alone), nvcc is missing or fails.
bool addCudaExecutable(std::vector<uint8_t> &artifact,
                       const CudaTargetOptions &options, std::string &error);

} // namespace kiln

#endif
