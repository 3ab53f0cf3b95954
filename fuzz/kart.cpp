//===- kart.cpp - fuzz the artifact loader and verifier, then run --------===//
//
// An artifact from bytes (FlatBuffers verification, the loader's checks of
// every table, weights, tokenizer, CUDA and quantized storage); one that
// loads then runs its first function whose inputs fit a tiny size (every
// symbol 2, zero inputs: valid token ids).
#include "fuzz/Harness.h"
#include "runtime/Model.h"

#include <cctype>
#include <cstdlib>

using namespace kiln::runtime;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln::fuzz::AllocationBound bound(size, 16, size_t(64) << 20);
  std::unique_ptr<Model> model;
  if (!Model::fromBytes(std::vector<uint8_t>(data, data + size), model,
                        kiln::fuzz::scratch()))
    return 0;
  model->setThreads(1);
  for (const FunctionInfo &f : model->functions()) {
    std::map<std::string, Tensor> inputs;
    bool fits = true;
    for (const ArgInfo &a : f.inputs) {
      std::vector<int64_t> shape;
      int64_t elements = 1;
      for (const std::string &d : a.dims) {
        int64_t n = !d.empty() && std::isdigit(static_cast<unsigned char>(d[0]))
                        ? std::strtoll(d.c_str(), nullptr, 10)
                        : 2;
        shape.push_back(n);
        elements *= n > 0 && n <= 64 ? n : 1 << 20;
      }
      if (shape.size() > 6 || elements > 4096) {
        fits = false;
        break;
      }
      inputs[a.name] = Tensor(a.dtype, shape);
    }
    if (!fits)
      continue;
    std::vector<Tensor> outputs;
    (void)model->run(f.name, inputs, outputs);
    break;
  }
  return 0;
}
