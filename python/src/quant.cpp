//===- quant.cpp - Python bindings: quantized weight formats --------------===//
//
// kiln's quantizers on NumPy arrays, with the same tensor names and layouts
// a checkpoint uses (runtime/quant/Serialize.h): `quantize` turns an f32
// weight into those tensors, `dequantize` reads them back. The GIL is
// released while the values are computed.
//
//===----------------------------------------------------------------------===//
#include "bindings.h"

#include "runtime/quant/Serialize.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>

namespace py = pybind11;
using namespace kiln::runtime;

namespace {

[[noreturn]] void raise(const Status &s) {
  throw py::value_error(s.pythonMessage());
}

py::array toArray(const Tensor &t) {
  const char *dt = nullptr;
  switch (t.dtype()) {
  case DType::F32:
    dt = "float32";
    break;
  case DType::U8:
    dt = "uint8";
    break;
  case DType::I8:
    dt = "int8";
    break;
  default:
    throw std::runtime_error("unexpected tensor type " + t.describe());
  }
  std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end());
  py::array a{py::dtype(dt), shape};
  std::memcpy(a.mutable_data(), t.data(), t.bytes());
  return a;
}

/// A NumPy array of a dtype a checkpoint tensor may have, copied.
Tensor fromArray(const std::string &name, py::handle obj) {
  py::array a = py::array::ensure(obj, py::array::c_style);
  if (!a)
    throw py::value_error("'" + name + "' is not an array");
  DType dt;
  std::string kind = py::str(a.dtype());
  if (kind == "float32")
    dt = DType::F32;
  else if (kind == "uint8")
    dt = DType::U8;
  else if (kind == "int8")
    dt = DType::I8;
  else
    throw py::value_error("'" + name + "' has dtype " + kind +
                          "; quantized weights are float32, uint8 or int8");
  Tensor t(dt, std::vector<int64_t>(a.shape(), a.shape() + a.ndim()));
  std::memcpy(t.data(), a.data(), t.bytes());
  return t;
}

} // namespace

void kiln::python::registerQuant(py::module_ &m) {
  m.def(
      "quantize",
      [](py::handle weight, const std::string &spec, const std::string &name) {
        quant::QuantSpec qs;
        std::string error;
        if (!quant::parseQuantSpec(spec, qs, error))
          raise(Status::error(error));
        py::array a = py::array::ensure(weight);
        if (!a)
          throw py::value_error("'" + name + "' is not an array");
        Tensor w = fromNumpy(name, a, DType::F32, a.ndim());
        NamedTensors tensors;
        {
          py::gil_scoped_release unlocked;
          quant::QuantizedWeight q;
          if (Status s = quant::quantize(w, qs, q); !s) {
            py::gil_scoped_acquire locked;
            raise(Status::error("'" + name + "': " + s.text()));
          }
          quant::appendTensors(name, q, tensors);
        }
        py::dict out;
        for (const auto &[n, t] : tensors)
          out[py::str(n)] = toArray(t);
        return out;
      },
      py::arg("weight"), py::arg("spec") = "nf4", py::arg("name") = "weight");
  m.def(
      "dequantize",
      [](const py::dict &tensors, const std::string &name) {
        std::vector<std::pair<std::string, Tensor>> held;
        for (auto item : tensors) {
          std::string n = py::str(item.first);
          held.emplace_back(n, fromArray(n, item.second));
        }
        std::map<std::string, const Tensor *> byName;
        for (const auto &[n, t] : held)
          byName[n] = &t;
        Tensor out;
        {
          py::gil_scoped_release unlocked;
          quant::QuantizedWeight q;
          Status s = quant::readQuantized(name, byName, q, nullptr);
          if (s)
            s = quant::dequantize(q, out);
          if (!s) {
            py::gil_scoped_acquire locked;
            raise(s);
          }
        }
        return toArray(out);
      },
      py::arg("tensors"), py::arg("name") = "weight");
}
