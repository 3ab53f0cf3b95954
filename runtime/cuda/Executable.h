//===- Executable.h - an artifact's CUDA executable -------------*- C++ -*-===//
//
// Load-time checks of the CUDA executable `kiln compile --target=cuda`
// stores (codegen/CudaTarget.h): one fatbin per artifact, for this
// runtime's kernel ABI, with bounded tables; and of the kernels that name
// it.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_CUDA_EXECUTABLE_H
#define KILN_RUNTIME_CUDA_EXECUTABLE_H

#include "runtime/Tensor.h"
#include "runtime/kart_generated.h"

#include <string>

namespace kiln::runtime::cuda {

/// Checks the artifact's executables: at most one, for CUDA, a fatbin of
/// this runtime's ABI version, with entry points and a block size.
Status checkExecutables(const kart::Program &p);

/// The index of the artifact's CUDA executable, or -1.
int cudaExecutable(const kart::Program &p);

/// Why kernel `k` (device CUDA) cannot run as it says, or "".
std::string checkCudaKernel(const kart::Program &p, const kart::Kernel &k);

/// True when every kernel of the artifact runs on the CUDA device (it was
/// compiled with --target=cuda alone).
bool cudaOnly(const kart::Program &p);

} // namespace kiln::runtime::cuda

#endif
