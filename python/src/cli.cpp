//===- cli.cpp - Python bindings: the CLI's commands ----------------------===//
//
// kiln.train() runs `kiln train` itself (tools/TrainCommand.cpp) in this
// process, so a run configured from Python and one from the command line
// are the same code with the same options and the same config files.
//
//===----------------------------------------------------------------------===//
#include "bindings.h"

#include "tools/Commands.h"

#include <pybind11/stl.h>

namespace py = pybind11;

void kiln::python::registerCli(py::module_ &m) {
  m.def(
      "train_command",
      [](const std::vector<std::string> &args) {
        std::string output;
        int rc;
        {
          py::gil_scoped_release release;
          rc = kiln::tools::trainCommand(args, &output);
        }
        return py::make_tuple(rc, output);
      },
      py::arg("args"));
}
