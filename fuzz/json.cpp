//===- json.cpp - fuzz the JSON parser (config.json, trainer state) -------===//
#include "runtime/Json.h"
#include "fuzz/Harness.h"

using namespace kiln::runtime;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln::fuzz::AllocationBound bound(size, 256, size_t(1) << 20);
  JsonValue v;
  (void)parseJson(std::string(reinterpret_cast<const char *>(data), size), v,
                  "input");
  return 0;
}
