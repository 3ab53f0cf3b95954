//===- Memory.h - what this machine and an artifact can hold ----*- C++ -*-===//
//
// The numbers kiln checks a plan against before it allocates: a model's
// parameters while the frontend declares them, a call's arena before it
// runs, a training run's whole footprint before its first step. Refusing
// early, with the numbers, replaces an abort (std::bad_alloc) or the OOM
// killer minutes later. Header-only: the compiler uses it without linking
// the runtime.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_MEMORY_H
#define KILN_RUNTIME_MEMORY_H

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <unistd.h>

namespace kiln::runtime {

/// The most weight bytes an artifact embeds: FlatBuffers addresses 2 GiB,
/// shared with the plan and its own tables. Larger models keep their
/// weights beside the artifact (`--external-weights`).
constexpr uint64_t kMaxEmbeddedWeightBytes =
    (uint64_t(1) << 31) - (uint64_t(64) << 20);

/// The machine's physical memory in bytes (0 when it cannot be read). A
/// control group's memory limit (cgroup v2 `memory.max`), when lower, is
/// what counts.
inline uint64_t physicalMemory() {
  long pages = sysconf(_SC_PHYS_PAGES), pageSize = sysconf(_SC_PAGE_SIZE);
  uint64_t memory =
      pages > 0 && pageSize > 0
          ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(pageSize)
          : 0;
  std::ifstream cg("/sys/fs/cgroup/memory.max"); // "max" or a byte count
  std::string limit;
  if (cg >> limit && limit != "max") {
    char *end = nullptr;
    unsigned long long n = std::strtoull(limit.c_str(), &end, 10);
    if (end && *end == '\0' && n > 0 && (memory == 0 || n < memory))
      memory = n;
  }
  return memory;
}

/// "1.5 GiB", "320.0 MiB", "12 KiB", "100 bytes".
inline std::string formatBytes(uint64_t bytes) {
  char buf[64];
  if (bytes >= (uint64_t(1) << 30))
    std::snprintf(buf, sizeof buf, "%.1f GiB",
                  static_cast<double>(bytes) / (uint64_t(1) << 30));
  else if (bytes >= (uint64_t(1) << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB",
                  static_cast<double>(bytes) / (uint64_t(1) << 20));
  else if (bytes >= 1024)
    std::snprintf(buf, sizeof buf, "%llu KiB",
                  static_cast<unsigned long long>(bytes / 1024));
  else
    std::snprintf(buf, sizeof buf, "%llu bytes",
                  static_cast<unsigned long long>(bytes));
  return buf;
}

/// a * b into `out`, or false when the product exceeds `limit` (never
/// overflows).
inline bool multiplyWithin(uint64_t a, uint64_t b, uint64_t limit,
                           uint64_t &out) {
  if (a != 0 && b > limit / a)
    return false;
  out = a * b;
  return out <= limit;
}

} // namespace kiln::runtime

#endif
