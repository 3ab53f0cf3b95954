//===- Random.h - a small portable random generator -------------*- C++ -*-===//
#ifndef KILN_RUNTIME_RANDOM_H
#define KILN_RUNTIME_RANDOM_H

#include <cstdint>

namespace kiln::runtime {

/// splitmix64: the same seed gives the same stream on every machine and
/// standard library, which seeded initialization and sampling rely on.
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  /// A double in (0, 1) from 53 random bits.
  double uniform() {
    return (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53;
  }
};

} // namespace kiln::runtime

#endif
