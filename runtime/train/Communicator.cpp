//===- Communicator.cpp - shards, the one-rank communicator --------------===//
#include "runtime/Communicator.h"

#include <cstdlib>
#include <cstring>

using namespace kiln;
using namespace kiln::runtime;

Shards Shards::even(size_t n, int ranks) {
  Shards s;
  size_t r = ranks > 0 ? static_cast<size_t>(ranks) : 1;
  size_t at = 0;
  for (size_t i = 0; i < r; ++i) {
    size_t c = n / r + (i < n % r ? 1 : 0);
    s.counts.push_back(c);
    s.offsets.push_back(at);
    at += c;
  }
  return s;
}

namespace {

/// Nothing to wait for: a one-rank reduction is its own result.
class Done final : public PendingReduce {
public:
  Status wait() override { return Status::ok(); }
  Status progress() override { return Status::ok(); }
};

class Local final : public Communicator {
public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int localSize() const override { return 1; }
  std::string describe() const override { return "one process"; }
  Status allReduceSum(float *, size_t) override { return Status::ok(); }
  Status startAllReduceSum(float *, size_t,
                           std::unique_ptr<PendingReduce> &out) override {
    out = std::make_unique<Done>();
    return Status::ok();
  }
  Status
  startReduceScatterSum(const float *in, float *out, const Shards &shards,
                        bool accumulate,
                        std::unique_ptr<PendingReduce> &pending) override {
    size_t n = shards.total();
    if (accumulate)
      for (size_t j = 0; j < n; ++j)
        out[j] += in[j];
    else if (in != out)
      std::memmove(out, in, n * sizeof(float));
    pending = std::make_unique<Done>();
    return Status::ok();
  }
  Status gather(const float *in, float *out, const Shards &shards,
                int root) override {
    if (root != 0)
      return Status::error("gather to rank " + std::to_string(root) + " of 1");
    if (in != out)
      std::memmove(out, in, shards.total() * sizeof(float));
    return Status::ok();
  }
  Status allGather(const float *in, float *out, const Shards &shards) override {
    if (in != out)
      std::memmove(out, in, shards.total() * sizeof(float));
    return Status::ok();
  }
  Status allGatherBytes(const void *in, void *out, size_t bytes) override {
    if (in != out)
      std::memmove(out, in, bytes);
    return Status::ok();
  }
  Status broadcast(void *, size_t, int root) override {
    return root == 0 ? Status::ok()
                     : Status::error("broadcast from rank " +
                                     std::to_string(root) + " of 1");
  }
  Status barrier() override { return Status::ok(); }
  void abort(int) override {}
};

} // namespace

std::shared_ptr<Communicator> kiln::runtime::localCommunicator() {
  return std::make_shared<Local>();
}

bool kiln::runtime::launchedByMpi() {
  // Open MPI's mpirun, PMIx launchers (srun, prterun) and MPICH's Hydra.
  for (const char *v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"}) {
    const char *e = std::getenv(v);
    if (e && *e)
      return true;
  }
  return false;
}
