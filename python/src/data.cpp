//===- data.cpp - Python bindings: the training data pipeline -------------===//
//
// What kiln.TextDataset is made of, the same pieces `kiln train` reads its
// data with (runtime/Text.h): token files, tokenizers built from the text,
// and the held-out split and batch sampler of TextData.
//
//===----------------------------------------------------------------------===//
#include "bindings.h"

#include "runtime/File.h"
#include "runtime/Text.h"
#include "runtime/Tokenizer.h"

#include <pybind11/stl.h>

namespace py = pybind11;
using namespace kiln::runtime;

namespace {

/// TextData and the sequence length its windows were checked against.
struct PyTextData {
  TextData data;
  int64_t seq = 0;
};

} // namespace

void kiln::python::registerData(py::module_ &m) {
  m.def(
      "read_training_text",
      [](const std::string &path) {
        std::string text;
        Status s;
        {
          py::gil_scoped_release release;
          s = readFile(path, text, trainingDataLimit(), "text file");
        }
        if (!s)
          throw py::value_error(s.pythonMessage());
        return py::bytes(text);
      },
      py::arg("path"));
  m.def(
      "read_token_file",
      [](const std::string &path, const std::string &dtype) {
        TokenWidth width = dtype == "uint16"   ? TokenWidth::U16
                           : dtype == "uint32" ? TokenWidth::U32
                                               : TokenWidth::Auto;
        std::vector<int32_t> ids;
        TokenFileInfo info;
        Status s;
        {
          py::gil_scoped_release release;
          s = readTokenFile(path, width, trainingDataLimit(), ids, info);
        }
        if (!s)
          throw py::value_error(s.pythonMessage());
        Tensor t(DType::I32, {static_cast<int64_t>(ids.size())});
        std::copy(ids.begin(), ids.end(), t.as<int32_t>());
        py::dict d;
        d["format"] = info.format;
        d["max_id"] = info.maxId;
        d["max_id_offset"] = info.headerBytes + info.maxIdIndex * info.idBytes;
        d["id_bytes"] = info.idBytes;
        return py::make_tuple(toNumpy(std::move(t)), d);
      },
      py::arg("path"), py::arg("dtype"));
  m.def(
      "tokenizer_from_text",
      [](const std::string &kind, const std::string &text) {
        Tokenizer tok;
        if (Status s = Tokenizer::fromText(kind, text, tok); !s)
          throw py::value_error(s.pythonMessage());
        return tok;
      },
      py::arg("kind"), py::arg("text"));
  m.def("data_rng_state", &dataRngState, py::arg("seed"));

  py::class_<PyTextData>(m, "TextData")
      .def(
          py::init(
              [](py::array_t<int32_t, py::array::c_style | py::array::forcecast>
                     ids,
                 double evalFraction, int64_t seq) {
                std::vector<int32_t> v(ids.data(), ids.data() + ids.size());
                auto out = std::make_unique<PyTextData>();
                if (Status s = TextData::create(std::move(v), evalFraction, seq,
                                                out->data);
                    !s)
                  throw py::value_error(s.pythonMessage());
                out->seq = seq;
                return out;
              }),
          py::arg("ids"), py::arg("eval_fraction"), py::arg("seq"))
      .def_property_readonly(
          "train_tokens",
          [](const PyTextData &d) { return d.data.trainTokens(); })
      .def_property_readonly(
          "eval_tokens",
          [](const PyTextData &d) { return d.data.evalTokens(); })
      .def(
          "train_batch",
          [](const PyTextData &d, uint64_t state, int64_t batch) {
            SplitMix64 rng{state};
            Tensor tokens, targets;
            d.data.trainBatch(rng, batch, d.seq, tokens, targets);
            return py::make_tuple(toNumpy(std::move(tokens)),
                                  toNumpy(std::move(targets)), rng.state);
          },
          py::arg("state"), py::arg("batch"))
      .def(
          "eval_batch",
          [](const PyTextData &d, int64_t k, int64_t batch) {
            if (d.data.evalTokens() == 0)
              throw py::value_error("nothing is held out for evaluation "
                                    "(eval_fraction=0)");
            Tensor tokens, targets;
            d.data.evalBatch(k, batch, d.seq, tokens, targets);
            return py::make_tuple(toNumpy(std::move(tokens)),
                                  toNumpy(std::move(targets)));
          },
          py::arg("k"), py::arg("batch"));
}
