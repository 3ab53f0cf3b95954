//===- CudaTarget.cpp - CUDA executables in an artifact -------------------===//
#include "codegen/CudaTarget.h"

#include "codegen/CudaEmitter.h"
#include "runtime/cuda/KernelAbi.h"
#include "runtime/cuda/Launch.h"
#include "runtime/kart_generated.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdlib>
#include <memory>
#include <optional>

using namespace kiln;

const std::vector<std::string> &kiln::cudaArchitectures() {
  static const std::vector<std::string> archs = {"sm_80", "sm_90"};
  return archs;
}

std::string kiln::findNvcc(std::string &looked) {
  if (const char *e = std::getenv("KILN_NVCC"); e && *e) {
    looked = std::string("$KILN_NVCC (") + e + ")";
    return llvm::sys::fs::can_execute(e) ? e : "";
  }
  looked = "/usr/local/cuda/bin/nvcc and the PATH";
  if (llvm::sys::fs::can_execute("/usr/local/cuda/bin/nvcc"))
    return "/usr/local/cuda/bin/nvcc";
  if (auto p = llvm::sys::findProgramByName("nvcc"))
    return *p;
  return "";
}

namespace {

/// A temporary directory removed with its files.
struct TempDir {
  llvm::SmallString<128> path;
  ~TempDir() {
    if (!path.empty())
      llvm::sys::fs::remove_directories(path);
  }
};

/// The kernels that cannot run on the CUDA device, listed for an error.
std::string unsupportedKernels(const kart::Program &p) {
  std::string list;
  int shown = 0, total = 0;
  for (const kart::Function *f : *p.functions())
    for (size_t i = 0; i < f->kernels()->size(); ++i) {
      const kart::Kernel &k = *f->kernels()->Get(i);
      std::string why = runtime::cuda::unsupportedReason(k);
      if (why.empty())
        continue;
      if (shown++ < 5)
        list += "\n  " + f->name()->str() + " kernel " + std::to_string(i) +
                (k.location() ? " (" + k.location()->str() + ")" : "") + ": " +
                why;
      ++total;
    }
  if (total > shown)
    list += "\n  ... and " + std::to_string(total - shown) + " more";
  return list;
}

} // namespace

bool kiln::addCudaExecutable(std::vector<uint8_t> &artifact,
                             const CudaTargetOptions &options,
                             std::string &error) {
  std::string source;
  std::vector<std::string> entries;
  if (!emitCudaSource(artifact.data(), artifact.size(), source, error,
                      &entries)) {
    error = "CUDA code generation: " + error;
    return false;
  }
  const kart::Program &program = *kart::GetProgram(artifact.data());
  if (options.cudaOnly) {
    if (std::string list = unsupportedKernels(program); !list.empty()) {
      error = "--target=cuda: some kernels cannot run on the CUDA device "
              "yet (compile with --target=cpu,cuda to keep the CPU's, or "
              "leave out the functions that hold them, e.g. --no-decode):" +
              list;
      return false;
    }
  }
  std::string looked;
  std::string nvcc = findNvcc(looked);
  if (nvcc.empty()) {
    error = "--target=cuda needs nvcc from the CUDA toolkit; none at " +
            looked + " (set KILN_NVCC to its path)";
    return false;
  }
  TempDir dir;
  if (std::error_code ec =
          llvm::sys::fs::createUniqueDirectory("kiln-cuda", dir.path)) {
    error = "cannot create a temporary directory for nvcc: " + ec.message();
    return false;
  }
  std::string cu = (dir.path + "/kernels.cu").str(),
              fatbin = (dir.path + "/kernels.fatbin").str(),
              log = (dir.path + "/nvcc.log").str();
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(cu, ec);
    if (ec) {
      error = cu + ": " + ec.message();
      return false;
    }
    os << source;
  }
  std::vector<std::string> args = {nvcc, "-fatbin", "-O3"};
  const std::vector<std::string> &archs = cudaArchitectures();
  std::vector<std::string> recorded;
  for (const std::string &a : archs) {
    std::string compute = "compute_" + a.substr(3);
    args.push_back("-gencode=arch=" + compute + ",code=" + a);
    recorded.push_back(a);
  }
  std::string ptx = "compute_" + archs.back().substr(3);
  args.push_back("-gencode=arch=" + ptx + ",code=" + ptx);
  recorded.push_back(ptx);
  args.insert(args.end(), {"-o", fatbin, cu});
  if (options.note)
    options.note("compiling " + std::to_string(entries.size()) +
                 " CUDA kernels with " + nvcc + " for sm_80, sm_90 and " + ptx +
                 " (PTX)");
  std::vector<llvm::StringRef> argv(args.begin(), args.end());
  std::optional<llvm::StringRef> redirects[] = {
      std::nullopt, llvm::StringRef(log), llvm::StringRef(log)};
  std::string execError;
  int rc = llvm::sys::ExecuteAndWait(nvcc, argv, std::nullopt, redirects, 0, 0,
                                     &execError);
  if (rc != 0) {
    std::string output;
    if (auto b = llvm::MemoryBuffer::getFile(log))
      output = (*b)->getBuffer().take_front(4000).str();
    error = "nvcc failed (" +
            (rc < 0 ? execError : "exit status " + std::to_string(rc)) +
            ") on the generated CUDA source" +
            (output.empty() ? "" : ":\n" + output);
    return false;
  }
  auto binary = llvm::MemoryBuffer::getFile(fatbin, /*IsText=*/false);
  if (!binary) {
    error = "nvcc wrote no fatbin: " + binary.getError().message();
    return false;
  }

  // The artifact again, with the executable (and, for CUDA alone, every
  // kernel on the CUDA device).
  std::unique_ptr<kart::ProgramT> p(program.UnPack());
  auto exe = std::make_unique<kart::ExecutableT>();
  exe->device = kart::Device::CUDA;
  exe->format = "fatbin";
  exe->name = p->model + ".fatbin";
  exe->data.assign((*binary)->getBufferStart(), (*binary)->getBufferEnd());
  exe->abi = KILN_CUDA_ABI_VERSION;
  exe->architectures = recorded;
  exe->entries = entries;
  exe->block = KILN_CUDA_BLOCK;
  int index = static_cast<int>(p->executables.size());
  p->executables.push_back(std::move(exe));
  if (options.cudaOnly)
    for (auto &f : p->functions)
      for (auto &k : f->kernels) {
        k->device = kart::Device::CUDA;
        k->executable = index;
      }
  flatbuffers::FlatBufferBuilder fbb;
  kart::FinishProgramBuffer(fbb, kart::Program::Pack(fbb, p.get()));
  artifact.assign(fbb.GetBufferPointer(),
                  fbb.GetBufferPointer() + fbb.GetSize());
  return true;
}
