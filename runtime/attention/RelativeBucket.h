//===- RelativeBucket.h - T5's relative-position buckets --------*- C++ -*-===//
//
// The bucket of a relative position `key - query`, shared by
// kiln.relative_position_bucket (a [Tq, Tk] table of them) and
// kiln.cached_attention's relative bias (one per query and cached key), so
// that incremental decoding adds exactly the bias the whole sequence gets.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_ATTENTION_RELATIVEBUCKET_H
#define KILN_RUNTIME_ATTENTION_RELATIVEBUCKET_H

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>

namespace kiln::runtime::attention {

/// T5's bucket: half the buckets (all without `bidirectional`) for the
/// distances to earlier keys; of those, the first half exact and the rest
/// logarithmic up to `maxDistance`.
inline int32_t relativeBucket(int64_t relative, bool bidirectional,
                              int64_t buckets, int64_t maxDistance) {
  int64_t bucket = 0, n = buckets;
  if (bidirectional) {
    n /= 2;
    if (relative > 0)
      bucket += n;
    relative = std::abs(relative);
  } else {
    relative = -std::min<int64_t>(relative, 0);
  }
  int64_t exact = n / 2;
  if (relative < exact)
    return static_cast<int32_t>(bucket + relative);
  // In float32, as T5's reference computes it, so buckets agree at the
  // boundaries.
  float ratio =
      std::log(static_cast<float>(relative) / static_cast<float>(exact)) /
      static_cast<float>(std::log(static_cast<double>(maxDistance) / exact));
  int64_t large =
      exact + static_cast<int64_t>(ratio * static_cast<float>(n - exact));
  return static_cast<int32_t>(bucket + std::min(large, n - 1));
}

} // namespace kiln::runtime::attention

#endif
