//===- GradientReducer.cpp - gradients summed across ranks ----------------===//
#include "runtime/train/GradientReducer.h"

#include <algorithm>
#include <chrono>

using namespace kiln;
using namespace kiln::runtime;

ParameterLayout::ParameterLayout(const std::vector<size_t> &sizes,
                                 const std::vector<bool> &trainable)
    : sizes_(sizes), trainable_(trainable) {
  for (size_t i = 0; i < sizes_.size(); ++i) {
    at_.push_back(total_);
    if (trainable_[i])
      total_ += sizes_[i];
  }
}

void ParameterLayout::shard(int ranks, size_t chunk) {
  std::vector<size_t> starts;
  for (size_t i = 0; i < sizes_.size(); ++i)
    if (trainable_[i])
      for (size_t at = 0; at < sizes_[i]; at += chunk)
        starts.push_back(at_[i] + at);
  starts.push_back(total_);
  // Rank r's shard begins at the chunk start nearest r total / ranks.
  bounds_.assign(1, 0);
  for (int r = 1; r < ranks; ++r) {
    size_t target = static_cast<size_t>(static_cast<double>(total_) * r /
                                        static_cast<double>(ranks));
    auto it = std::lower_bound(starts.begin(), starts.end(), target);
    size_t pick = *it;
    if (it != starts.begin() && target - *(it - 1) < *it - target)
      pick = *(it - 1);
    bounds_.push_back(std::max(pick, bounds_.back()));
  }
  bounds_.push_back(total_);
}

std::pair<size_t, size_t> ParameterLayout::range(int r) const {
  if (!sharded())
    return {0, total_};
  return {bounds_[static_cast<size_t>(r)], bounds_[static_cast<size_t>(r) + 1]};
}

std::pair<size_t, size_t> ParameterLayout::owned(size_t i, int r) const {
  if (!trainable_[i])
    return {0, 0};
  size_t n = sizes_[i], at = at_[i];
  auto [first, end] = range(r);
  auto clampTo = [&](size_t x) { return x <= at ? 0 : std::min(x - at, n); };
  size_t lo = clampTo(first), hi = clampTo(end);
  return {lo, std::max(lo, hi)};
}

Shards ParameterLayout::window(size_t a, size_t b) const {
  Shards w;
  for (int r = 0; r < ranks(); ++r) {
    auto [first, end] = range(r);
    size_t lo = std::clamp(first, a, b), hi = std::clamp(end, a, b);
    w.offsets.push_back(lo - a);
    w.counts.push_back(hi - lo);
  }
  return w;
}

GradientReducer::GradientReducer(Communicator &comm,
                                 const ParameterLayout &layout, int zero,
                                 size_t bucketFloats)
    : comm_(comm), layout_(layout), zero_(zero), rank_(comm.rank()) {
  size_t target = bucketFloats
                      ? bucketFloats
                      : std::clamp<size_t>(layout.total() / 8, size_t(1) << 16,
                                           size_t(1) << 22);
  // Buckets of whole parameters in the layout's order.
  bucketOf_.assign(layout.parameters(), 0);
  for (size_t i = 0; i < layout.parameters(); ++i) {
    if (!layout.trainable(i) || !layout.size(i))
      continue;
    // A parameter larger than the target has a bucket of its own.
    if (buckets_.empty() ||
        buckets_.back().end - buckets_.back().begin + layout.size(i) > target) {
      buckets_.emplace_back();
      buckets_.back().begin = layout.at(i);
    }
    buckets_.back().end = layout.at(i) + layout.size(i);
    bucketOf_[i] = buckets_.size() - 1;
  }
  added_.assign(layout.parameters(), false);
  if (zero_ == 2) {
    auto [first, end] = layout.range(rank_);
    shard_.assign(end - first, 0.0f);
  } else {
    flat_.assign(layout.total(), 0.0f);
  }
}

float *GradientReducer::shardSum() {
  return zero_ == 2 ? shard_.data() : flat_.data() + layout_.range(rank_).first;
}

Status GradientReducer::begin(int64_t mb, int64_t count, float scale) {
  mb_ = mb;
  scale_ = scale;
  // ZeRO-2 sums every micro-batch into the owners' shards, ZeRO-1 the last
  // one (a rank updates its shard only); otherwise every rank gets all.
  scatter_ = zero_ == 2 || (zero_ == 1 && mb == count - 1);
  std::fill(added_.begin(), added_.end(), false);
  for (Bucket &b : buckets_)
    b.missing = 0;
  for (size_t i = 0; i < layout_.parameters(); ++i)
    if (layout_.trainable(i) && layout_.size(i))
      ++buckets_[bucketOf_[i]].missing;
  return Status::ok();
}

Status GradientReducer::waitFor(Bucket &b) {
  if (b.pending) {
    auto t0 = std::chrono::steady_clock::now();
    Status s = b.pending->wait();
    waited_ +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
    b.pending.reset();
    if (!s)
      return s;
  }
  if (b.stage >= 0) {
    stageBusy_[static_cast<size_t>(b.stage)] = false;
    b.stage = -1;
    size_t index = static_cast<size_t>(&b - buckets_.data());
    staged_.erase(std::find(staged_.begin(), staged_.end(), index));
  }
  return Status::ok();
}

Status GradientReducer::stageFor(Bucket &b) {
  // Up to four buckets staged at once; more only while those are still
  // filling (a reduction in flight is waited for instead).
  constexpr size_t kStages = 4;
  auto freeStage = [&]() -> int {
    for (size_t s = 0; s < stages_.size(); ++s)
      if (!stageBusy_[s])
        return static_cast<int>(s);
    return -1;
  };
  int s = freeStage();
  if (s < 0 && stages_.size() >= kStages)
    for (size_t index : staged_)
      if (buckets_[index].pending) {
        if (Status st = waitFor(buckets_[index]); !st)
          return st;
        s = freeStage();
        break;
      }
  if (s < 0) {
    stages_.emplace_back();
    stageBusy_.push_back(false);
    s = static_cast<int>(stages_.size()) - 1;
  }
  std::vector<float> &stage = stages_[static_cast<size_t>(s)];
  stage.resize(std::max(stage.size(), b.end - b.begin));
  stageBusy_[static_cast<size_t>(s)] = true;
  b.stage = s;
  staged_.push_back(static_cast<size_t>(&b - buckets_.data()));
  return Status::ok();
}

Status GradientReducer::add(size_t i, const float *g) {
  if (i >= added_.size() || !layout_.trainable(i) || added_[i])
    return Status::error("internal error: gradient " + std::to_string(i) +
                         " given twice or for a frozen parameter");
  added_[i] = true;
  const size_t n = layout_.size(i);
  if (!n)
    return Status::ok();
  Bucket &b = buckets_[bucketOf_[i]];
  const int64_t len = static_cast<int64_t>(n);
  const float scale = scale_;
  if (!b.filling) {
    // The bucket's first gradient of this micro-batch: its previous
    // reduction (into the same sums) goes first.
    if (Status s = waitFor(b); !s)
      return s;
    if (scatter_)
      if (Status s = stageFor(b); !s)
        return s;
    b.filling = true;
  }
  if (!scatter_) {
    // In place in the all-reduced buffer: rank 0 adds the running sum, so
    // that the rank-ordered sum is one process's next additions.
    float *d = flat_.data() + layout_.at(i);
    const bool running = mb_ > 0 && rank_ == 0;
#pragma omp parallel for if (len > 65536)
    for (int64_t j = 0; j < len; ++j)
      d[j] = running ? d[j] + g[j] * scale : g[j] * scale;
  } else {
    float *d = stages_[static_cast<size_t>(b.stage)].data() +
               (layout_.at(i) - b.begin);
#pragma omp parallel for if (len > 65536)
    for (int64_t j = 0; j < len; ++j)
      d[j] = g[j] * scale;
  }
  if (--b.missing == 0) {
    b.filling = false;
    return start(b);
  }
  return Status::ok();
}

Status GradientReducer::start(Bucket &b) {
  ++started_;
  if (!scatter_)
    return comm_.startAllReduceSum(flat_.data() + b.begin, b.end - b.begin,
                                   b.pending);
  // The owners add the ranks' gradients after their running sums.
  Shards w = layout_.window(b.begin, b.end);
  size_t me = static_cast<size_t>(rank_);
  float *dest = shardSum();
  if (w.counts[me])
    dest += b.begin + w.offsets[me] - layout_.range(rank_).first;
  return comm_.startReduceScatterSum(
      stages_[static_cast<size_t>(b.stage)].data(), dest, w, mb_ > 0,
      b.pending);
}

Status GradientReducer::progress() {
  for (Bucket &b : buckets_)
    if (b.pending)
      if (Status s = b.pending->progress(); !s)
        return s;
  return Status::ok();
}

Status GradientReducer::end() {
  for (size_t i = 0; i < added_.size(); ++i)
    if (layout_.trainable(i) && !added_[i])
      return Status::error("internal error: no gradient for parameter " +
                           std::to_string(i) + " in this micro-batch");
  return Status::ok();
}

Status GradientReducer::finish() {
  for (Bucket &b : buckets_)
    if (Status s = waitFor(b); !s)
      return s;
  return Status::ok();
}

const float *GradientReducer::gradient(size_t i) const {
  auto [lo, hi] = layout_.owned(i, rank_);
  if (hi <= lo)
    return nullptr;
  size_t at = layout_.at(i) + lo;
  if (zero_ == 2)
    return shard_.data() + (at - layout_.range(rank_).first);
  return flat_.data() + at;
}
