//===- Harness.cpp - what the fuzz harnesses share ------------------------===//
#include "fuzz/Harness.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
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
} // namespace

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
