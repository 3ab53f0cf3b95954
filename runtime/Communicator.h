//===- Communicator.h - collectives between training processes -*- C++ -*-===//
//
// Data-parallel training (docs/distributed.md) runs one process per rank;
// they exchange gradients, optimizer shards and weights through a
// Communicator. Two implementations:
//
//   - openMpi: the ranks of MPI_COMM_WORLD (Open MPI's `mpirun`), built when
//     CMake finds MPI (KILN_MPI, on by default);
//   - localCommunicator: one rank, nothing to exchange (tests, and training
//     in one process through the same code).
//
// NCCL fits the same interface once the CUDA backend trains.
//
// Every reduction adds the ranks' values in rank order, ((x0 + x1) + x2)
// ..., on every rank: the results are bit-identical across ranks and equal
// to one process adding the same values in that order, which is what makes
// N ranks train exactly like one process accumulating N micro-batches.
//
// A communicator's calls are collective: every rank makes the same calls in
// the same order, from one thread at a time.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_COMMUNICATOR_H
#define KILN_RUNTIME_COMMUNICATOR_H

#include "runtime/Tensor.h"

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace kiln::runtime {

/// How n floats split into one contiguous shard per rank: rank r holds
/// counts[r] floats from offsets[r].
struct Shards {
  std::vector<size_t> counts, offsets;
  /// n split as evenly as possible over `ranks`, the first n % ranks
  /// shards one larger.
  static Shards even(size_t n, int ranks);
  size_t total() const {
    return counts.empty() ? 0 : offsets.back() + counts.back();
  }
};

/// An all-reduce started by Communicator::startAllReduceSum, finished by
/// wait(): until then its buffer must stay untouched.
class PendingReduce {
public:
  virtual ~PendingReduce() = default;
  /// Lets the transfer advance without waiting (MPI moves a nonblocking
  /// collective on only inside its calls): call it now and then while
  /// computing.
  virtual Status progress() = 0;
  virtual Status wait() = 0;
};

class Communicator {
public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// The ranks on this machine (this one included), which share its cores.
  virtual int localSize() const = 0;
  /// "MPI: Open MPI v4.1.4, rank 0 of 2 on host-a", "one process".
  virtual std::string describe() const = 0;

  /// `data` (n floats) becomes the rank-ordered sum of every rank's `data`.
  virtual Status allReduceSum(float *data, size_t n) = 0;
  /// Starts allReduceSum on `data`, to be finished by the result's wait()
  /// (buckets of gradients while the backward pass goes on). Several may be
  /// in flight; every rank starts them, and waits for them, in the same
  /// order.
  virtual Status startAllReduceSum(float *data, size_t n,
                                   std::unique_ptr<PendingReduce> &out) = 0;
  /// This rank's shard of the rank-ordered sum of every rank's `in`
  /// (shards.total() floats) into `out` (shards.counts[rank()] floats).
  /// With `accumulate`, out's own values come first, ((out + x0) + x1) ...:
  /// a running sum kept by the shard's owner (ZeRO-2's gradients) grows in
  /// the order one process would add to it.
  Status reduceScatterSum(const float *in, float *out, const Shards &shards,
                          bool accumulate = false) {
    std::unique_ptr<PendingReduce> pending;
    if (Status s = startReduceScatterSum(in, out, shards, accumulate, pending);
        !s)
      return s;
    return pending->wait();
  }
  /// reduceScatterSum started, finished by the result's wait(): `in` and
  /// `out` stay untouched until then.
  virtual Status
  startReduceScatterSum(const float *in, float *out, const Shards &shards,
                        bool accumulate,
                        std::unique_ptr<PendingReduce> &pending) = 0;
  /// Every rank's shard (`in`: shards.counts[rank()] floats) into `out`
  /// (shards.total() floats) at its offset; `in` may be `out`'s own shard.
  virtual Status allGather(const float *in, float *out,
                           const Shards &shards) = 0;
  /// Every rank's shard (`in`: shards.counts[rank()] floats) into `out`
  /// (shards.total() floats) on rank `root` only; `out` is not touched
  /// elsewhere and may be null there (checkpoints of sharded state).
  virtual Status gather(const float *in, float *out, const Shards &shards,
                        int root) = 0;
  /// Every rank's `bytes` bytes at `in` into `out` (size() * bytes), in rank
  /// order (losses and metrics, which rank 0 then adds in order).
  virtual Status allGatherBytes(const void *in, void *out, size_t bytes) = 0;
  /// Rank `root`'s `bytes` bytes at `data` onto every rank.
  virtual Status broadcast(void *data, size_t bytes, int root) = 0;
  virtual Status barrier() = 0;
  /// Ends every rank's process with exit status `code` (MPI_Abort): for a
  /// rank that failed while the others may wait in a collective for it,
  /// which would otherwise never return. One rank: does nothing.
  virtual void abort(int code) = 0;
};

/// The one-rank communicator.
std::shared_ptr<Communicator> localCommunicator();

/// Whether this process was started by an MPI launcher (mpirun, srun):
/// its environment names a rank.
bool launchedByMpi();

/// The ranks of MPI_COMM_WORLD. Initializes MPI on first use (one
/// communicator per process: MPI itself is per process) and finalizes it
/// at exit. Fails with the reason where kiln was built without MPI or MPI
/// cannot start.
Status openMpi(std::shared_ptr<Communicator> &out);

} // namespace kiln::runtime

#endif
