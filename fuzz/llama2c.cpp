//===- llama2c.cpp - fuzz the llama2.c checkpoint reader ------------------===//
//
// The reader refuses a file whose size differs from what its header
// describes, which random mutation rarely keeps; so an odd-sized input whose
// header is valid is resized to that size (its body repeated) before it is
// read, and the header's fields, not the size check, decide how far it gets.
#include "runtime/Llama2c.h"
#include "fuzz/Harness.h"

#include <cstring>
#include <vector>

using namespace kiln::runtime;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::vector<uint8_t> fitted;
  int32_t header[7];
  Llama2cConfig config;
  uint64_t want = 0;
  if (size > 28 && size % 2 == 1 &&
      (std::memcpy(header, data, 28),
       parseLlama2cHeader(header, "input", config, want)) &&
      want != size && want <= (uint64_t(1) << 20)) {
    fitted.assign(data, data + 28);
    while (fitted.size() < want)
      fitted.push_back(data[28 + (fitted.size() - 28) % (size - 28)]);
    data = fitted.data();
    size = fitted.size();
  }
  // Bounded by the size of the file kiln reads.
  kiln::fuzz::AllocationBound bound(size, 8, size_t(1) << 20);
  std::string path = kiln::fuzz::writeInput("model.bin", data, size);
  (void)readLlama2cConfig(path, config);
  NamedTensors tensors;
  (void)readLlama2c(path, config, tensors);
  return 0;
}
