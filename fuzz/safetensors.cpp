//===- safetensors.cpp - fuzz the .safetensors reader ---------------------===//
#include "runtime/Safetensors.h"
#include "fuzz/Harness.h"

using namespace kiln::runtime;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln::fuzz::AllocationBound bound(size, 8, size_t(1) << 20);
  NamedTensors tensors;
  (void)readSafetensors(kiln::fuzz::writeInput("in.safetensors", data, size),
                        tensors, 64);
  return 0;
}
