//===- npy.cpp - fuzz the .npy reader -------------------------------------===//
#include "runtime/Npy.h"
#include "fuzz/Harness.h"

using namespace kiln::runtime;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln::fuzz::AllocationBound bound(size, 8, size_t(1) << 20);
  Tensor t;
  (void)readNpy(kiln::fuzz::writeInput("in.npy", data, size), t);
  return 0;
}
