//===- bindings.h - the _kiln extension module, one file per subsystem ----===//
#ifndef KILN_PYTHON_BINDINGS_H
#define KILN_PYTHON_BINDINGS_H

#include "runtime/Model.h"

#include <map>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <string>
#include <vector>

namespace kiln::python {
void registerCompiler(pybind11::module_ &m);
void registerRuntime(pybind11::module_ &m);
void registerTraining(pybind11::module_ &m);
void registerQuant(pybind11::module_ &m);
void registerGeneration(pybind11::module_ &m);
void registerCli(pybind11::module_ &m);
void registerData(pybind11::module_ &m);

/// The tensor as a NumPy array: without a copy when the tensor owns its
/// storage (the array keeps it alive), else copied.
pybind11::array toNumpy(runtime::Tensor t);

/// A NumPy array as a runtime tensor of `want`; ValueError (naming the
/// input) on another dtype or rank. With `keepAlive`, a C-contiguous array
/// is passed as a view of its own memory (the array is appended to
/// `keepAlive`, which must outlive the tensor); otherwise it is copied.
runtime::Tensor fromNumpy(const std::string &name, pybind11::handle obj,
                          runtime::DType want, size_t rank,
                          std::vector<pybind11::object> *keepAlive = nullptr);
/// The inputs of `function`, checked against its signature: ValueError
/// names a missing, unknown or mistyped input.
std::map<std::string, runtime::Tensor>
functionInputs(const runtime::Model &m, const std::string &function,
               const pybind11::dict &inputs,
               std::vector<pybind11::object> *keepAlive = nullptr);
} // namespace kiln::python

#endif
