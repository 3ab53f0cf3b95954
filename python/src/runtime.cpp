//===- runtime.cpp - Python bindings: the runtime -------------------------===//
//
// A loaded artifact as a Python object: its functions called with NumPy
// arrays, its parameters, weights in and out. Inputs are checked against
// the function's signature first, so a wrong name, dtype or rank raises
// ValueError naming the input; outputs are fresh arrays that own their
// memory. The GIL is released while kernels run.
//
//===----------------------------------------------------------------------===//
#include "bindings.h"

#include "runtime/Generate.h"
#include "runtime/Model.h"
#include "runtime/Safetensors.h"
#include "runtime/attention/Layout.h"
#include "runtime/quant/Serialize.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstring>

namespace py = pybind11;
using namespace kiln::runtime;

namespace {

[[noreturn]] void raise(const Status &s) {
  throw std::runtime_error(s.pythonMessage());
}

const char *numpyType(DType t) {
  switch (t) {
  case DType::F32:
    return "float32";
  case DType::F64:
    return "float64";
  case DType::I32:
    return "int32";
  case DType::I64:
    return "int64";
  case DType::Bool:
    return "bool";
  case DType::U8:
    return "uint8";
  case DType::I8:
    return "int8";
  case DType::F16:
    return "float16";
  default:
    return "";
  }
}

} // namespace

py::array kiln::python::toNumpy(Tensor t) {
  std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end());
  py::dtype dtype(numpyType(t.dtype()));
  if (!t.ownsStorage() || t.bytes() == 0) {
    py::array a(dtype, shape);
    std::memcpy(a.mutable_data(), t.data(), t.bytes());
    return a;
  }
  auto *held = new Tensor(std::move(t));
  py::capsule owner(held, [](void *p) { delete static_cast<Tensor *>(p); });
  return py::array(dtype, shape, held->data(), owner);
}

namespace {} // namespace

/// A C-contiguous copy of `a` as a Tensor of `want` (no value conversion:
/// the dtype must match).
Tensor kiln::python::fromNumpy(const std::string &name, py::handle obj,
                               DType want, size_t rank,
                               std::vector<py::object> *keepAlive) {
  py::array a = py::array::ensure(obj);
  if (!a)
    throw py::value_error("input '" + name + "' is not an array");
  if (!a.dtype().is(py::dtype(numpyType(want))))
    throw py::value_error("input '" + name + "' has dtype " +
                          std::string(py::str(a.dtype())) + ", expected " +
                          numpyType(want));
  if (static_cast<size_t>(a.ndim()) != rank)
    throw py::value_error("input '" + name + "' has rank " +
                          std::to_string(a.ndim()) + ", expected " +
                          std::to_string(rank));
  std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  const int aligned = 0x0100; // NPY_ARRAY_ALIGNED
  if (keepAlive && (a.flags() & py::array::c_style) && (a.flags() & aligned)) {
    // Already in the runtime's layout: pass the array's memory itself. The
    // caller keeps the array alive (and unchanged) for the call.
    keepAlive->push_back(a);
    return Tensor::view(want, shape, const_cast<void *>(a.data()));
  }
  auto c = py::array::ensure(a, py::array::c_style);
  Tensor t(want, shape);
  std::memcpy(t.data(), c.data(), t.bytes());
  return t;
}

std::map<std::string, Tensor>
kiln::python::functionInputs(const Model &m, const std::string &name,
                             const py::dict &inputs,
                             std::vector<py::object> *keepAlive) {
  const FunctionInfo *fn = nullptr;
  for (const FunctionInfo &f : m.functions())
    if (f.name == name)
      fn = &f;
  if (!fn)
    throw py::value_error("the model has no function '" + name + "'");
  std::map<std::string, Tensor> in;
  for (const ArgInfo &a : fn->inputs) {
    py::str key(a.name);
    if (!inputs.contains(key))
      throw py::value_error("missing input '" + a.name + "' of '" + name + "'");
    in[a.name] =
        fromNumpy(a.name, inputs[key], a.dtype, a.dims.size(), keepAlive);
  }
  for (auto item : inputs) {
    std::string k = py::str(item.first);
    if (!in.count(k))
      throw py::value_error("'" + name + "' has no input '" + k + "'");
  }
  return in;
}

namespace {

py::dict describe(const ArgInfo &a) {
  py::dict d;
  d["name"] = a.name;
  d["dtype"] = numpyType(a.dtype);
  d["dims"] = a.dims;
  return d;
}

} // namespace

void kiln::python::registerRuntime(py::module_ &m) {
  // A model's tokenizer (immutable, so safe from any thread); text is
  // UTF-8 str or bytes in, ids out, and back.
  py::class_<Tokenizer>(m, "Tokenizer")
      .def_property_readonly("kind", &Tokenizer::kind)
      .def_property_readonly("size", &Tokenizer::size)
      .def_property_readonly("bos", &Tokenizer::bos)
      .def_property_readonly("eos", &Tokenizer::eos)
      .def(
          "encode",
          [](const Tokenizer &t, const std::string &text) {
            std::vector<int32_t> ids;
            Status s;
            {
              py::gil_scoped_release release;
              s = t.encode(text, ids);
            }
            if (!s)
              throw py::value_error(s.pythonMessage());
            return ids;
          },
          py::arg("text"))
      .def(
          "decode_bytes",
          [](const Tokenizer &t, const std::vector<int32_t> &ids) {
            return py::bytes(t.decode(ids));
          },
          py::arg("ids"))
      .def("pieces", [](const Tokenizer &t) {
        py::list out;
        for (const std::string &p : t.pieces())
          out.append(py::bytes(p));
        return out;
      });

  m.def(
      "load_tokenizer",
      [](const std::string &spec) {
        Tokenizer tok;
        Status s;
        {
          py::gil_scoped_release release;
          s = Tokenizer::load(spec, tok);
        }
        if (!s)
          throw py::value_error(s.pythonMessage());
        return tok;
      },
      py::arg("spec"));

  // A kernel timeline recorder (runtime/Profile.h), attached to models
  // with Model.set_profiler.
  py::class_<Profiler, std::shared_ptr<Profiler>>(m, "Profiler")
      .def(py::init<>())
      .def_property_readonly(
          "slices", [](const Profiler &p) { return p.slices().size(); })
      .def_property_readonly("dropped", &Profiler::dropped)
      .def(
          "write_trace",
          [](const Profiler &p, const std::string &path) {
            if (Status s = p.writeTrace(path); !s)
              throw py::value_error(s.pythonMessage());
          },
          py::arg("path"))
      .def(
          "summary",
          [](const Profiler &p, size_t top) {
            return profileSummary(p.slices(), top);
          },
          py::arg("top") = 20);

  py::class_<Model>(m, "Model")
      .def_static(
          "load",
          [](const std::string &path, const std::string &weightsFile,
             const std::string &device) {
            std::unique_ptr<Model> model;
            LoadOptions options;
            options.weightsFile = weightsFile;
            options.device = device;
            if (Status s = Model::load(path, model, options); !s)
              raise(s);
            return model;
          },
          py::arg("path"), py::arg("weights_file") = "",
          py::arg("device") = "cpu")
      .def_static(
          "from_bytes",
          [](py::bytes data, const std::string &dir,
             const std::string &weightsFile) {
            std::string s = data;
            std::unique_ptr<Model> model;
            LoadOptions options;
            options.weightsFile = weightsFile;
            if (Status st =
                    Model::fromBytes(std::vector<uint8_t>(s.begin(), s.end()),
                                     model, dir, options);
                !st)
              raise(st);
            return model;
          },
          py::arg("data"), py::arg("dir") = ".", py::arg("weights_file") = "")
      .def_property_readonly("name", &Model::modelName)
      .def_property_readonly("history", &Model::history)
      .def("append_history", &Model::appendHistory, py::arg("line"))
      .def(
          "set_profiler",
          [](Model &m, std::shared_ptr<Profiler> p) {
            m.setProfiler(std::move(p));
          },
          py::arg("profiler").none(true))
      .def_property("threads", &Model::threads, &Model::setThreads)
      .def_property_readonly(
          "tokenizer",
          [](const Model &m) -> const Tokenizer * {
            return m.tokenizer().empty() ? nullptr : &m.tokenizer();
          },
          py::return_value_policy::reference_internal)
      .def_property_readonly("encoder_decoder",
                             [](const Model &m) { return isEncoderDecoder(m); })
      .def("functions",
           [](const Model &m) {
             py::list out;
             for (const FunctionInfo &f : m.functions()) {
               py::dict d;
               d["name"] = f.name;
               py::list in, res;
               for (const ArgInfo &a : f.inputs)
                 in.append(describe(a));
               for (const ArgInfo &a : f.outputs)
                 res.append(describe(a));
               d["inputs"] = in;
               d["outputs"] = res;
               out.append(d);
             }
             return out;
           })
      .def(
          "attention_layout",
          [](const Model &m, int64_t T) {
            if (T < 1 || T > (int64_t(1) << 20))
              throw py::value_error("attention_layout: T must be between 1 "
                                    "and 1048576, got " +
                                    std::to_string(T));
            py::list out;
            for (const FunctionInfo &f : m.functions())
              for (const AttentionSite &a : f.attention) {
                attention::Layout l =
                    attention::describeLayout(a.pattern, T, T, a.heads);
                py::dict d;
                d["function"] = f.name;
                d["kernel"] = a.kernel;
                d["location"] = a.location;
                d["pattern"] = attention::formatPattern(a.pattern);
                d["causal"] = a.pattern.causal;
                d["num_heads"] = a.heads;
                d["block"] = py::make_tuple(l.blockQ, l.blockK);
                d["blocks"] = py::make_tuple(l.qBlocks, l.kBlocks);
                py::list heads;
                for (const attention::HeadLayout &h : l.heads) {
                  py::dict hd;
                  hd["computed"] = h.computed;
                  hd["masked"] = h.masked;
                  hd["density"] = static_cast<double>(h.computed) /
                                  static_cast<double>(l.total());
                  hd["layout"] = h.text;
                  heads.append(hd);
                }
                d["heads"] = heads;
                out.append(d);
              }
            return out;
          },
          py::arg("T"))
      .def("hyperparameters",
           [](const Model &m) {
             // As the model declared them: ints and bools stay so.
             py::dict d;
             const auto &hp = m.hyperparameters();
             for (size_t i = 0; i < hp.size(); ++i) {
               const auto &[k, v] = hp[i];
               switch (m.hyperparameterKind(i)) {
               case HParamKind::Boolean:
                 d[py::str(k)] = py::bool_(v != 0);
                 break;
               case HParamKind::Integer:
                 // Exactly representable (the frontend's ints are int64).
                 if (std::fabs(v) < 9.0e18 && v == std::trunc(v)) {
                   d[py::str(k)] = py::int_(static_cast<long long>(v));
                   break;
                 }
                 [[fallthrough]];
               default:
                 d[py::str(k)] = v;
               }
             }
             return d;
           })
      .def(
          "run",
          [](Model &m, const std::string &name, const py::dict &inputs,
             const std::string &kernels) {
            RunOptions run;
            if (kernels == "reference")
              run.kernels = KernelChoice::Reference;
            else if (kernels == "fast")
              run.kernels = KernelChoice::Fast;
            else if (!kernels.empty())
              throw py::value_error("kernels must be 'fast' or 'reference', "
                                    "got '" +
                                    kernels + "'");
            std::map<std::string, Tensor> in = functionInputs(m, name, inputs);
            std::vector<Tensor> out;
            Status s;
            {
              py::gil_scoped_release release;
              s = m.run(name, in, out, run);
            }
            if (!s) {
              // Sizes that disagree across inputs are the caller's shapes.
              if (s.message().find("input '") != std::string::npos)
                throw py::value_error(s.pythonMessage());
              raise(s);
            }
            py::list res;
            for (Tensor &t : out)
              res.append(toNumpy(std::move(t)));
            return res;
          },
          py::arg("function"), py::arg("inputs"), py::arg("kernels") = "")
      .def("parameter_info",
           [](const Model &m) {
             py::list out;
             for (const ParameterInfo &p : m.parameters()) {
               py::dict d;
               d["name"] = p.name;
               d["shape"] = p.shape;
               d["trainable"] = p.trainable;
               out.append(d);
             }
             return out;
           })
      .def("parameters",
           [](const Model &m) {
             py::dict d;
             for (const ParameterInfo &p : m.parameters()) {
               Tensor t;
               if (Status s = m.parameter(p.name, t); !s)
                 raise(s);
               d[py::str(p.name)] = toNumpy(std::move(t));
             }
             return d;
           })
      .def(
          "set_parameters",
          [](Model &m, const py::dict &weights) {
            NamedTensors tensors;
            for (const ParameterInfo &p : m.parameters()) {
              py::str key(p.name);
              if (!weights.contains(key))
                throw py::value_error("missing parameter '" + p.name + "'");
              Tensor t =
                  fromNumpy(p.name, weights[key], p.dtype, p.shape.size());
              if (t.shape() != p.shape)
                throw py::value_error("parameter '" + p.name + "' is " +
                                      t.describe() + ", the model expects " +
                                      shapeString(p.dtype, p.shape));
              tensors.emplace_back(p.name, std::move(t));
            }
            if (static_cast<size_t>(py::len(weights)) != tensors.size())
              for (auto item : weights) {
                std::string k = py::str(item.first);
                bool known = false;
                for (const auto &[n, t] : tensors)
                  known |= n == k;
                if (!known)
                  throw py::value_error("'" + k +
                                        "' is not a parameter of the model");
              }
            if (Status s = m.setParameters(tensors); !s)
              throw py::value_error(s.pythonMessage());
          },
          py::arg("weights"))
      .def(
          "load_weights",
          [](Model &m, const std::string &path) {
            NamedTensors tensors;
            if (Status s = readSafetensors(path, tensors,
                                           m.parameters().size() *
                                               quant::kMaxTensorsPerWeight);
                !s)
              raise(s);
            if (Status s = m.setParameters(tensors); !s)
              throw py::value_error(s.pythonMessage());
          },
          py::arg("path"))
      .def(
          "save_weights",
          [](const Model &m, const std::string &path) {
            if (Status s = m.saveWeights(path); !s)
              raise(s);
          },
          py::arg("path"))
      .def(
          "save_adapter",
          [](const Model &m, const std::string &dir) {
            if (Status s = m.saveAdapter(dir); !s)
              raise(s);
          },
          py::arg("dir"))
      .def(
          "merge_adapters",
          [](const Model &m, const std::string &path,
             const std::string &quantize) {
            quant::QuantSpec spec;
            std::string error;
            if (!quantize.empty() &&
                !quant::parseQuantSpec(quantize, spec, error))
              throw py::value_error(error);
            NamedTensors merged;
            Status s;
            {
              py::gil_scoped_release release;
              s = m.mergeAdapters(merged, quantize.empty() ? nullptr : &spec);
              if (s)
                s = writeSafetensors(path, merged);
            }
            if (!s)
              raise(s);
          },
          py::arg("path"), py::arg("quantize") = "")
      .def_property_readonly("lora",
                             [](const Model &m) -> py::object {
                               if (!m.lora())
                                 return py::none();
                               py::dict d;
                               d["rank"] = m.lora()->rank;
                               d["alpha"] = m.lora()->alpha;
                               d["targets"] = m.lora()->targets;
                               return d;
                             })
      .def(
          "save",
          [](const Model &m, const std::string &path) {
            if (Status s = m.saveArtifact(path); !s)
              raise(s);
          },
          py::arg("path"));
}
