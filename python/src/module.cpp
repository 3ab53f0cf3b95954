//===- module.cpp - the _kiln extension module ----------------------------===//
#include "bindings.h"

PYBIND11_MODULE(_kiln, m) {
  m.doc() = "kiln's compiler and runtime (use the `kiln` package)";
  kiln::python::registerCompiler(m);
  kiln::python::registerRuntime(m);
  m.attr("MAX_THREADS") = kiln::runtime::kMaxThreads;
  m.attr("VERSION") = KILN_VERSION;
  kiln::python::registerTraining(m);
  kiln::python::registerQuant(m);
  kiln::python::registerGeneration(m);
  kiln::python::registerCli(m);
  kiln::python::registerData(m);
}
