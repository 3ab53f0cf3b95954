// kiln-deploy: run a compiled model with nothing but the kiln runtime.
//
//   kiln-deploy MODEL.kart FUNCTION NAME=INPUT.npy... [-o OUTPUT.npy]
//
// Loads and verifies the artifact, binds the inputs, runs the function and
// writes its first result (or prints its shape and first values).
#include "runtime/Model.h"
#include "runtime/Npy.h"

#include <cstring>
#include <iostream>
#include <map>

using namespace kiln::runtime;

int main(int argc, char **argv) {
  if (argc < 3) {
    std::cerr << "usage: kiln-deploy MODEL.kart FUNCTION NAME=INPUT.npy... "
                 "[-o OUTPUT.npy]\n";
    return 2;
  }
  std::map<std::string, Tensor> inputs;
  std::string output;
  for (int i = 3; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-o" && i + 1 < argc) {
      output = argv[++i];
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
