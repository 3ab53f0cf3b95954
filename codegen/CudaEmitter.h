//===- CudaEmitter.h - CUDA C++ of an artifact's own kernels ---*- C++ -*-===//
//
// The CUDA backend's code generator: CUDA C++ for the kernels kiln
// generates itself (today the fused elementwise programs, forward and
// backward, and the row norms), read from the artifact's kernel table so
// that the GPU computes exactly the program the CPU runs. `kiln compile
// --emit=cuda` prints it; nvcc compiles it for sm_80/sm_90 and
// test/cuda/Emulation.h runs it on the CPU (docs/cuda.md).
//
// Each elementwise program is `extern "C" __global__ void
// kiln_<model>_<function>_k<i>(KilnElementwiseArgs)`, a grid-stride loop
// over the elements; one kiln_<model>_norm(KilnNormArgs) serves every
// LayerNorm and RMSNorm, a block per row at a time. Both take kCudaBlock
// threads per block and any grid. For the host build (KILN_CUDA_EMULATION)
// a table lists every kernel by model, function and kernel index, with the
// kind of argument block it takes, registered with KILN_CUDA_REGISTER.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_CODEGEN_CUDAEMITTER_H
#define KILN_CODEGEN_CUDAEMITTER_H

#include <cstddef>
#include <cstdint>
#include <string>

namespace kiln {

/// The most operands and dimensions a generated elementwise kernel takes
/// (its argument block must fit CUDA's 4 KiB of kernel parameters).
constexpr int kCudaMaxOperands = 40;
constexpr int kCudaMaxRank = 8;
/// Threads per block of the generated elementwise kernels.
constexpr int kCudaBlock = 256;

/// CUDA C++ for the generated kernels of an artifact (`size` bytes at
/// `artifact`, already verified by its writer). False, with `error`, for a
/// kernel the CUDA backend cannot generate.
bool emitCudaSource(const uint8_t *artifact, size_t size, std::string &out,
                    std::string &error);

} // namespace kiln

#endif
