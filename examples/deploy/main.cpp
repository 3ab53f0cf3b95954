// kiln-deploy: run a compiled model with nothing but the kiln runtime.
//
//   kiln-deploy MODEL.kart FUNCTION NAME=INPUT.npy... [-o OUTPUT.npy]
//               [--concurrent=N]
//
// Loads and verifies the artifact, binds the inputs, runs the function and
// writes its first result (or prints its shape and first values). With
// --concurrent=N it then runs the function from N threads at once, several
// times each, and checks every result equals the first run's bit for bit
// (exit status 3 if not): the runtime is safe to call from many threads.
#include "runtime/Model.h"
#include "runtime/Npy.h"

#include <atomic>
#include <cstring>
#include <iostream>
#include <map>
#include <thread>
#include <vector>

using namespace kiln::runtime;

int main(int argc, char **argv) {
  if (argc < 3) {
    std::cerr << "usage: kiln-deploy MODEL.kart FUNCTION NAME=INPUT.npy... "
                 "[-o OUTPUT.npy]\n";
    return 2;
  }
  std::map<std::string, Tensor> inputs;
  std::string output;
  int concurrent = 0;
  for (int i = 3; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-o" && i + 1 < argc) {
      output = argv[++i];
      continue;
    }
    if (a.rfind("--concurrent=", 0) == 0) {
      concurrent = std::atoi(a.c_str() + 13);
      if (concurrent < 1 || concurrent > 64) {
        std::cerr << "kiln-deploy: error: --concurrent expects 1..64\n";
        return 2;
      }
      continue;
    }
    size_t eq = a.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "kiln-deploy: error: expected NAME=INPUT.npy, got '" << a
                << "'\n";
      return 2;
    }
    Tensor t;
    if (Status s = readNpy(a.substr(eq + 1), t); !s) {
      std::cerr << "kiln-deploy: error: " << s.message() << "\n";
      return 1;
    }
    inputs[a.substr(0, eq)] = std::move(t);
  }
  std::unique_ptr<Model> model;
  if (Status s = Model::load(argv[1], model); !s) {
    std::cerr << "kiln-deploy: error: " << s.message() << "\n";
    return 1;
  }
  std::vector<Tensor> results;
  if (Status s = model->run(argv[2], inputs, results); !s) {
    std::cerr << "kiln-deploy: error: " << s.message() << "\n";
    return 1;
  }
  if (concurrent) {
    std::atomic<int> mismatches{0}, failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < concurrent; ++t)
      threads.emplace_back([&] {
        for (int r = 0; r < 4; ++r) {
          std::vector<Tensor> got;
          if (!model->run(argv[2], inputs, got)) {
            ++failures;
            continue;
          }
          for (size_t k = 0; k < got.size(); ++k)
            if (got[k].bytes() != results[k].bytes() ||
                std::memcmp(got[k].data(), results[k].data(),
                            got[k].bytes()) != 0)
              ++mismatches;
        }
      });
    for (std::thread &t : threads)
      t.join();
    if (failures || mismatches) {
      std::cerr << "kiln-deploy: error: " << failures << " failed and "
                << mismatches << " different results from " << concurrent
                << " threads\n";
      return 3;
    }
  }
  if (!output.empty()) {
    if (Status s = writeNpy(output, results.at(0)); !s) {
      std::cerr << "kiln-deploy: error: " << s.message() << "\n";
      return 1;
    }
    return 0;
  }
  for (const Tensor &t : results)
    std::cout << t.describe() << "\n";
  return 0;
}
