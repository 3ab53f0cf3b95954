//===- CudaEmitter.h - CUDA C++ of an artifact's own kernels ---*- C++ -*-===//
//
// The CUDA backend's code generator: one CUDA C++ file per artifact, read
// from its kernel table so that the GPU computes exactly the program the
// CPU runs. It holds the argument blocks (runtime/cuda/KernelAbi.h), the
// kernel library (codegen/cuda/Library.cuh: norms, cross-entropy,
// embeddings, copies, reductions, RoPE, dropout, global norm, optimizer
// updates) and a generated kernel per fused elementwise program or single
// elementwise op, `kiln_<model>_<function>_k<i>(KilnElementwiseArgs)`.
// runtime/cuda/Launch.cpp decides the launches. `kiln compile --emit=cuda`
// prints it; nvcc compiles it for sm_80/sm_90 and test/cuda/Emulation.h
// runs it on the CPU, where (under KILN_CUDA_EMULATION) a table lists every
// kernel by model and name (docs/cuda.md).
//
//===----------------------------------------------------------------------===//
#ifndef KILN_CODEGEN_CUDAEMITTER_H
#define KILN_CODEGEN_CUDAEMITTER_H

#include "runtime/cuda/KernelAbi.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kiln {

constexpr int kCudaMaxOperands = KILN_CUDA_MAX_OPERANDS;
constexpr int kCudaBlock = KILN_CUDA_BLOCK;

/// CUDA C++ for the generated kernels of an artifact (`size` bytes at
/// `artifact`, already verified by its writer), and the names of its entry
/// points when `entries` is given. False, with `error`, for a kernel the
/// CUDA backend cannot generate.
bool emitCudaSource(const uint8_t *artifact, size_t size, std::string &out,
                    std::string &error,
                    std::vector<std::string> *entries = nullptr);

} // namespace kiln

#endif
