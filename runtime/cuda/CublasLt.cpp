//===- CublasLt.cpp - cuBLASLt through dlopen -----------------------------===//
#include "runtime/cuda/CublasLt.h"

#include <dlfcn.h>

#include <cstdint>
#include <cstdlib>

using namespace kiln;
using namespace kiln::runtime;
using namespace kiln::runtime::cuda;

namespace {
/// cuBLASLt's recommended workspace on Hopper.
constexpr size_t kWorkspaceBytes = 32u << 20;
} // namespace

std::vector<std::string> CublasLt::candidates() {
  const char *env = std::getenv("KILN_CUBLASLT");
  if (env && *env)
    return std::string(env) == "off" ? std::vector<std::string>{}
                                     : std::vector<std::string>{env};
  return {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"};
}

Status CublasLt::load(const std::vector<std::string> &paths,
                      std::unique_ptr<CublasLt> &out) {
  if (paths.empty())
    return Status::error("cuBLASLt is switched off (KILN_CUBLASLT=off)");
  std::string why;
  for (const std::string &path : paths) {
    void *lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char *e = dlerror();
      why += "; " + (e ? std::string(e) : path + ": cannot open");
      continue;
    }
    std::unique_ptr<CublasLt> b(new CublasLt());
    b->lib_ = lib;
    const char *missing = nullptr;
#define KILN_RESOLVE(member, symbol)                                           \
  b->api_.member =                                                             \
      reinterpret_cast<decltype(b->api_.member)>(dlsym(lib, #symbol));         \
  if (!b->api_.member && !missing)                                             \
    missing = #symbol;
    KILN_CUBLASLT_ENTRIES(KILN_RESOLVE)
#undef KILN_RESOLVE
    if (missing) {
      why += "; " + path + " lacks " + missing;
      continue; // the library stays loaded: unloading CUDA code is unsafe
    }
    out = std::move(b);
    return Status::ok();
  }
  return Status::error("cannot load cuBLASLt (" + why.substr(2) + ")");
}

CublasLt::~CublasLt() {
  if (workspace_ && driver_)
    driver_->release(workspace_);
  if (handle_)
    api_.destroy(handle_);
}

std::string CublasLt::describe() const {
  size_t v = api_.getVersion();
  // 130100: major * 10000 + minor * 100 + patch.
  return "cuBLASLt " + std::to_string(v / 10000) + "." +
         std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

Status CublasLt::check(lt::Status s, const std::string &what) const {
  if (s == 0)
    return Status::ok();
  const char *text = api_.getStatusString ? api_.getStatusString(s) : nullptr;
  return Status::error("cuBLASLt error " + std::to_string(s) + " " + what +
                       (text ? std::string(": ") + text : std::string()));
}

Status CublasLt::start(Driver &driver) {
  if (Status s = check(api_.create(&handle_), "creating its handle"); !s) {
    handle_ = nullptr;
    return s;
  }
  if (Status s = driver.allocate(kWorkspaceBytes, workspace_); !s)
    return s;
  driver_ = &driver;
  workspaceBytes_ = kWorkspaceBytes;
  return Status::ok();
}

CublasLt::Descriptors::~Descriptors() {
  if (!api)
    return;
  for (lt::Layout l : {a, b, c, d})
    if (l)
      api->layoutDestroy(l);
  if (desc)
    api->matmulDescDestroy(desc);
}

Status CublasLt::prepare(const GemmCall &g, Descriptors &out) const {
  out.api = &api_;
  if (Status s =
          check(api_.matmulDescCreate(&out.desc, lt::kComputeF32, lt::kDataF32),
                "creating a matmul descriptor");
      !s)
    return s;
  auto setDesc = [&](int attr, const void *v, size_t n, const char *what) {
    return check(api_.matmulDescSetAttribute(out.desc, attr, v, n), what);
  };
  int32_t ta = g.transA ? lt::kOpT : lt::kOpN,
          tb = g.transB ? lt::kOpT : lt::kOpN;
  uint32_t epilogue = g.activation == GemmCall::Activation::Relu
                          ? (g.bias ? lt::kEpilogueReluBias : lt::kEpilogueRelu)
                          : (g.bias ? lt::kEpilogueBias : lt::kEpilogueDefault);
  if (Status s = setDesc(lt::kDescTransA, &ta, sizeof ta, "setting TRANSA"); !s)
    return s;
  if (Status s = setDesc(lt::kDescTransB, &tb, sizeof tb, "setting TRANSB"); !s)
    return s;
  if (Status s = setDesc(lt::kDescEpilogue, &epilogue, sizeof epilogue,
                         "setting the epilogue");
      !s)
    return s;
  if (g.bias) {
    const void *bias = g.bias;
    if (Status s = setDesc(lt::kDescBiasPointer, &bias, sizeof bias,
                           "setting the bias");
        !s)
      return s;
  }
  // Column-major layouts: rows, columns, leading dimension, then batches.
  auto layout = [&](lt::Layout &l, int64_t rows, int64_t cols, int64_t ld,
                    int64_t stride, const char *which) -> Status {
    if (Status s = check(api_.layoutCreate(&l, lt::kDataF32, rows, cols, ld),
                         std::string("describing ") + which);
        !s)
      return s;
    if (g.batch == 1)
      return Status::ok();
    int32_t count = static_cast<int32_t>(g.batch);
    if (Status s = check(api_.layoutSetAttribute(l, lt::kLayoutBatchCount,
                                                 &count, sizeof count),
                         std::string("setting the batch count of ") + which);
        !s)
      return s;
    return check(api_.layoutSetAttribute(l, lt::kLayoutBatchStride, &stride,
                                         sizeof stride),
                 std::string("setting the batch stride of ") + which);
  };
  if (Status s = layout(out.a, g.transA ? g.k : g.m, g.transA ? g.m : g.k,
                        g.lda, g.strideA, "A");
      !s)
    return s;
  if (Status s = layout(out.b, g.transB ? g.n : g.k, g.transB ? g.k : g.n,
                        g.ldb, g.strideB, "B");
      !s)
    return s;
  if (Status s = layout(out.c, g.m, g.n, g.ldc, g.strideC, "C"); !s)
    return s;
  return layout(out.d, g.m, g.n, g.ldc, g.strideC, "D");
}

Status CublasLt::gemm(const GemmCall &g, void *stream) {
  if (!handle_)
    return Status::error("cuBLASLt was not started");
  Descriptors d;
  if (Status s = prepare(g, d); !s)
    return s;
  auto aligned = [](const void *p) {
    return static_cast<int64_t>(reinterpret_cast<uintptr_t>(p) % 16 == 0);
  };
  const float *c = g.beta != 0.0f && g.c ? g.c : g.d;
  Key key{g.m,
          g.n,
          g.k,
          g.lda,
          g.ldb,
          g.ldc,
          g.batch,
          g.strideA,
          g.strideB,
          g.strideC,
          g.transA * 2 + g.transB,
          static_cast<int64_t>(g.activation) * 2 + (g.bias != nullptr),
          g.beta != 0.0f,
          aligned(g.a) * 8 + aligned(g.b) * 4 + aligned(c) * 2 + aligned(g.d),
          aligned(g.bias),
          0};
  lt::HeuristicResult algo{};
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = algorithms_.find(key);
    if (it != algorithms_.end()) {
      algo = it->second;
    } else {
      lt::Preference pref = nullptr;
      if (Status s =
              check(api_.preferenceCreate(&pref), "creating a preference");
          !s)
        return s;
      uint64_t bytes = workspaceBytes_;
      lt::Status st = api_.preferenceSetAttribute(pref, lt::kPrefMaxWorkspace,
                                                  &bytes, sizeof bytes);
      int found = 0;
      if (st == 0)
        st = api_.algoGetHeuristic(handle_, d.desc, d.a, d.b, d.c, d.d, pref, 1,
                                   &algo, &found);
      api_.preferenceDestroy(pref);
      if (Status s = check(st, "choosing an algorithm"); !s)
        return s;
      if (found == 0)
        return Status::error("cuBLASLt has no algorithm for a " +
                             std::to_string(g.m) + " x " + std::to_string(g.n) +
                             " x " + std::to_string(g.k) + " product");
      algorithms_[key] = algo;
    }
  }
  return check(api_.matmul(handle_, d.desc, &g.alpha, g.a, d.a, g.b, d.b,
                           &g.beta, c, d.c, g.d, d.d, &algo.algo, workspace_,
                           workspaceBytes_, stream),
               "multiplying a " + std::to_string(g.m) + " x " +
                   std::to_string(g.n) + " x " + std::to_string(g.k) +
                   " product");
}
