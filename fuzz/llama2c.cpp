//===- llama2c.cpp - fuzz the llama2.c checkpoint reader ------------------===//
#include "runtime/Llama2c.h"
#include "fuzz/Harness.h"

using namespace kiln::runtime;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string path = kiln::fuzz::writeInput("model.bin", data, size);
  Llama2cConfig config;
  (void)readLlama2cConfig(path, config);
  NamedTensors tensors;
  (void)readLlama2c(path, config, tensors);
  return 0;
}
