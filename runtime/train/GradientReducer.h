//===- GradientReducer.h - gradients summed across ranks -------*- C++ -*-===//
//
// The data-parallel Trainer's two helpers (docs/distributed.md):
//
//   - ParameterLayout: the trainable parameters end to end in one flat
//     order, the same on every rank, and with ZeRO which contiguous shard
//     of it each rank owns;
//   - GradientReducer: each micro-batch's gradients summed over the ranks
//     in buckets, each bucket's reduction started as soon as its last
//     gradient is known — during the backward pass when the executor says
//     so — so that communication overlaps the rest of the computation.
//
// Every sum is the one a single process accumulating the ranks'
// micro-batches makes, element for element and in the same order.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_TRAIN_GRADIENTREDUCER_H
#define KILN_RUNTIME_TRAIN_GRADIENTREDUCER_H

#include "runtime/Communicator.h"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <utility>
#include <vector>

namespace kiln::runtime {

class ParameterLayout {
public:
  ParameterLayout() = default;
  /// `sizes[i]` elements of parameter i; frozen ones (`trainable[i]`
  /// false) take no place.
  ParameterLayout(const std::vector<size_t> &sizes,
                  const std::vector<bool> &trainable);

  /// ZeRO: one contiguous shard per rank of about total() / ranks
  /// elements, its bounds where `chunk`-element pieces of a parameter
  /// start (the gradient norm's chunks, so that the ranks' partial sums of
  /// squares are one process's).
  void shard(int ranks, size_t chunk);
  bool sharded() const { return !bounds_.empty(); }
  int ranks() const {
    return sharded() ? static_cast<int>(bounds_.size()) - 1 : 1;
  }

  size_t total() const { return total_; }
  size_t parameters() const { return sizes_.size(); }
  bool trainable(size_t i) const { return trainable_[i]; }
  size_t size(size_t i) const { return sizes_[i]; }
  /// Parameter i's first element in the flat order.
  size_t at(size_t i) const { return at_[i]; }
  /// The flat elements [first, second) rank r owns (all without ZeRO).
  std::pair<size_t, size_t> range(int r) const;
  /// The elements [first, second) of parameter i that rank r owns (empty
  /// for a frozen parameter).
  std::pair<size_t, size_t> owned(size_t i, int r) const;
  /// The ranks' parts of the flat elements [a, b), relative to a.
  Shards window(size_t a, size_t b) const;
  /// Calls f(parameter, first element, count, flat position) for every
  /// trainable parameter's elements within the flat range [a, b).
  template <typename F> void forEachIn(size_t a, size_t b, F &&f) const {
    for (size_t i = 0; i < sizes_.size(); ++i) {
      if (!trainable_[i])
        continue;
      size_t lo = a > at_[i] ? a : at_[i];
      size_t end = at_[i] + sizes_[i], hi = b < end ? b : end;
      if (lo < hi)
        f(i, lo - at_[i], hi - lo, lo);
    }
  }

private:
  std::vector<size_t> sizes_, at_;
  std::vector<bool> trainable_;
  size_t total_ = 0;
  std::vector<size_t> bounds_; // ZeRO: rank r owns [bounds_[r], bounds_[r+1])
};

class GradientReducer {
public:
  /// `zero`: the ZeRO stage (0, 1 or 2; a layout sharded for 1 and 2).
  /// `bucketFloats`: the most a bucket holds, unless one parameter is
  /// larger (0: an eighth of the gradients, from 64 Ki to 4 Mi floats).
  GradientReducer(Communicator &comm, const ParameterLayout &layout, int zero,
                  size_t bucketFloats = 0);

  /// Starts micro-batch `mb` of a step's `count` (on this rank); its
  /// gradients are scaled by `scale` (1 / the global micro-batch count).
  Status begin(int64_t mb, int64_t count, float scale);
  /// Parameter i's gradient for this micro-batch (layout.size(i) floats);
  /// every rank gives them in the same order (the executor's kernel order),
  /// each once. A bucket's reduction starts with its last gradient.
  Status add(size_t i, const float *gradient);
  bool added(size_t i) const { return added_[i]; }
  /// Lets the reductions in flight advance (between kernels).
  Status progress();
  /// Checks that every gradient of the micro-batch was given.
  Status end();
  /// Waits for every reduction in flight (the step's last one included).
  Status finish();

  /// After finish(): parameter i's summed gradient over the elements this
  /// rank owns (layout.owned(i, rank)); null when it owns none.
  const float *gradient(size_t i) const;
  /// Seconds this rank waited for reductions since the last resetStats.
  double waitedSeconds() const { return waited_; }
  size_t buckets() const { return buckets_.size(); }
  /// Reductions started so far.
  uint64_t started() const { return started_; }
  void resetStats() { waited_ = 0; }

private:
  struct Bucket {
    size_t begin = 0, end = 0; // flat elements, whole parameters
    size_t missing = 0;        // gradients still to come this micro-batch
    bool filling = false;      // some have come, its reduction not started
    std::unique_ptr<PendingReduce> pending;
    int stage = -1; // staging buffer it reads from (-1: none)
  };
  /// Waits for bucket b's reduction, if one is in flight.
  Status waitFor(Bucket &b);
  /// A free staging buffer for bucket b (waiting for the oldest in flight
  /// when all are taken).
  Status stageFor(Bucket &b);
  Status start(Bucket &b);
  /// Where this rank's summed shard accumulates (reduce-scatter).
  float *shardSum();

  Communicator &comm_;
  const ParameterLayout &layout_;
  int zero_ = 0;
  int rank_ = 0;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucketOf_; // parameter -> bucket
  std::vector<bool> added_;
  // The micro-batch: its index, whether it reduce-scatters (ZeRO) or
  // all-reduces, the scale.
  int64_t mb_ = 0;
  bool scatter_ = false;
  float scale_ = 1;
  std::vector<float> flat_;  // all-reduce: every gradient, in place
  std::vector<float> shard_; // ZeRO-2: this rank's running sum
  std::vector<std::vector<float>> stages_;
  std::vector<bool> stageBusy_;
  std::deque<size_t> staged_; // buckets holding a stage, oldest first
  double waited_ = 0;
  uint64_t started_ = 0;
};

} // namespace kiln::runtime

#endif
