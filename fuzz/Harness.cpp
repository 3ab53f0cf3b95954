//===- Harness.cpp - what the fuzz harnesses share ------------------------===//
#include "fuzz/Harness.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sanitizer/allocator_interface.h>
#include <unistd.h>

namespace kiln::fuzz {

namespace {
struct Scratch {
  std::string dir;
  Scratch() {
    const char *base = std::getenv("TMPDIR");
    std::string t =
        std::string(base && *base ? base : "/tmp") + "/kiln-fuzz-XXXXXX";
    if (!mkdtemp(t.data()))
      std::abort();
    dir = t;
  }
  ~Scratch() {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
};
// What AllocationBound measures; the hooks run on every thread.
std::atomic<bool> tracking{false};
std::atomic<int64_t> held{0}, peak{0};
// The largest peak seen, and the input size it was seen for.
std::atomic<int64_t> worstPeak{0}, worstSize{1};

void onMalloc(const volatile void *, size_t n) {
  if (!tracking.load(std::memory_order_relaxed))
    return;
  int64_t now =
      held.fetch_add(static_cast<int64_t>(n)) + static_cast<int64_t>(n);
  int64_t p = peak.load(std::memory_order_relaxed);
  while (now > p && !peak.compare_exchange_weak(p, now))
    ;
}

void onFree(const volatile void *ptr) {
  if (tracking.load(std::memory_order_relaxed) && ptr)
    held.fetch_sub(static_cast<int64_t>(__sanitizer_get_allocated_size(ptr)));
}

void report() {
  std::fprintf(stderr,
               "fuzz-allocation: at most %lld heap bytes held for an input "
               "of %lld bytes\n",
               static_cast<long long>(worstPeak.load()),
               static_cast<long long>(worstSize.load()));
}

} // namespace

AllocationBound::AllocationBound(size_t inputSize, size_t perByte, size_t slack)
    : inputSize(inputSize), limit(inputSize * perByte + slack) {
  static bool installed = [] {
    __sanitizer_install_malloc_and_free_hooks(onMalloc, onFree);
    std::atexit(report);
    return true;
  }();
  (void)installed;
  held = 0;
  peak = 0;
  tracking = true;
}

AllocationBound::~AllocationBound() {
  tracking = false;
  int64_t p = peak.load();
  // The worst by multiple of the input's size (with a 4 KiB floor: tiny
  // inputs legitimately need a few fixed structures).
  auto multiple = [](int64_t bytes, int64_t size) {
    return static_cast<double>(bytes) /
           static_cast<double>(std::max<int64_t>(size, 4096));
  };
  if (multiple(p, static_cast<int64_t>(inputSize)) >
      multiple(worstPeak.load(), worstSize.load())) {
    worstPeak = p;
    worstSize = static_cast<int64_t>(inputSize);
  }
  if (p > static_cast<int64_t>(limit)) {
    std::fprintf(stderr,
                 "fuzz-allocation: an input of %zu bytes made kiln hold %lld "
                 "heap bytes at once, over the bound of %zu\n",
                 inputSize, static_cast<long long>(p), limit);
    std::abort();
  }
}

const std::string &scratch() {
  static Scratch s;
  return s.dir;
}

std::string writeInput(const std::string &name, const uint8_t *data,
                       size_t size) {
  std::string path = scratch() + "/" + name;
  FILE *f = std::fopen(path.c_str(), "wb");
  if (!f)
    std::abort();
  if (size && std::fwrite(data, 1, size, f) != size)
    std::abort();
  std::fclose(f);
  return path;
}

} // namespace kiln::fuzz
