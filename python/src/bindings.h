//===- bindings.h - the _kiln extension module, one file per subsystem ----===//
#ifndef KILN_PYTHON_BINDINGS_H
#define KILN_PYTHON_BINDINGS_H

#include <pybind11/pybind11.h>

namespace kiln::python {
void registerCompiler(pybind11::module_ &m);
void registerRuntime(pybind11::module_ &m);
} // namespace kiln::python

#endif
