//===- Executable.cpp - an artifact's CUDA executable ---------------------===//
#include "runtime/cuda/Executable.h"

#include "runtime/cuda/KernelAbi.h"
#include "runtime/cuda/Launch.h"

using namespace kiln;
using namespace kiln::runtime;

namespace {
constexpr size_t kMaxEntries = 1 << 20, kMaxName = 512, kMaxArchitectures = 64;
} // namespace

Status cuda::checkExecutables(const kart::Program &p) {
  if (!p.executables())
    return Status::ok();
  auto bad = [](size_t i, const std::string &msg) {
    return Status::error("the artifact's backend executable " +
                         std::to_string(i) + " " + msg);
  };
  for (size_t i = 0; i < p.executables()->size(); ++i) {
    const kart::Executable *e = p.executables()->Get(i);
    if (e->device() != kart::Device::CUDA)
      return bad(i, "is for device " +
                        std::to_string(static_cast<int>(e->device())) +
                        ", which this runtime does not know");
    if (i > 0)
      return bad(i, "is a second CUDA executable; an artifact holds one");
    if (!e->format() || e->format()->str() != "fatbin")
      return bad(i, "is not a fatbin (format '" +
                        (e->format() ? e->format()->str() : "") + "')");
    if (e->abi() != KILN_CUDA_ABI_VERSION)
      return bad(i, "was generated for CUDA kernel ABI " +
                        std::to_string(e->abi()) + "; this runtime's is " +
                        std::to_string(KILN_CUDA_ABI_VERSION) +
                        " (recompile the model with this kiln)");
    if (!e->data() || e->data()->size() == 0)
      return bad(i, "is empty");
    if (!e->entries() || e->entries()->size() == 0 ||
        e->entries()->size() > kMaxEntries)
      return bad(i, "lists no entry points, or too many");
    for (const flatbuffers::String *n : *e->entries())
      if (!n || n->size() == 0 || n->size() > kMaxName)
        return bad(i, "has an entry point name that is empty or longer "
                      "than " +
                          std::to_string(kMaxName) + " bytes");
    if (e->architectures() && e->architectures()->size() > kMaxArchitectures)
      return bad(i, "lists too many architectures");
    if (e->block() < 32 || e->block() > 1024 || e->block() % 32)
      return bad(i, "has a block of " + std::to_string(e->block()) +
                        " threads (a multiple of 32, at most 1024)");
  }
  return Status::ok();
}

int cuda::cudaExecutable(const kart::Program &p) {
  if (!p.executables())
    return -1;
  for (size_t i = 0; i < p.executables()->size(); ++i)
    if (p.executables()->Get(i)->device() == kart::Device::CUDA)
      return static_cast<int>(i);
  return -1;
}

std::string cuda::checkCudaKernel(const kart::Program &p,
                                  const kart::Kernel &k) {
  int n = p.executables() ? static_cast<int>(p.executables()->size()) : 0;
  if (k.executable() < 0 || k.executable() >= n)
    return "runs on the CUDA device but names executable " +
           std::to_string(k.executable()) + " of the artifact's " +
           std::to_string(n);
  return unsupportedReason(k);
}

bool cuda::cudaOnly(const kart::Program &p) {
  for (const kart::Function *f : *p.functions())
    for (const kart::Kernel *k : *f->kernels())
      if (k->device() != kart::Device::CUDA)
        return false;
  return p.functions()->size() > 0;
}
