//===- generation.cpp - Python bindings: decoding -------------------------===//
//
// Generation one step at a time (what `Model.generate` and the token
// iterator drive) and the key/value caches of compiled decoding. Each
// object keeps its model alive; steps run with the GIL released.
//
//===----------------------------------------------------------------------===//
#include "bindings.h"

#include "runtime/Generate.h"
#include "runtime/KvCache.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>
#include <mutex>

namespace py = pybind11;
using namespace kiln::runtime;

namespace {

// Calls on one object from several Python threads take turns.
struct PyGeneration {
  std::unique_ptr<Generation> g;
  std::mutex mutex;
};

struct PyKvCache {
  Model *model;
  std::unique_ptr<KvCache> cache;
  std::mutex mutex;
};

py::dict statsDict(const GenerateStats &s) {
  py::dict d;
  d["prompt_tokens"] = s.promptTokens;
  d["generated_tokens"] = s.generatedTokens;
  d["prefill_seconds"] = s.prefillSeconds;
  d["decode_seconds"] = s.decodeSeconds;
  d["cached"] = s.cached;
  return d;
}

} // namespace

void kiln::python::registerGeneration(py::module_ &m) {
  py::class_<PyGeneration>(m, "Generation")
      .def(py::init([](Model &model,
                       const std::vector<std::vector<int32_t>> &prompts,
                       int64_t maxTokens, double temperature, int64_t topK,
                       double topP, double penalty, uint64_t seed,
                       bool recompute) {
             GenerateOptions o;
             o.maxTokens = maxTokens;
             o.temperature = temperature;
             o.topK = topK;
             o.topP = topP;
             o.repetitionPenalty = penalty;
             o.seed = seed;
             o.recompute = recompute;
             o.stopTokens = stopTokens(model.tokenizer());
             auto p = std::make_unique<PyGeneration>();
             if (Status s = Generation::start(model, prompts, o, p->g); !s)
               throw py::value_error(s.pythonMessage());
             return p;
           }),
           py::arg("model"), py::arg("prompts"), py::arg("max_tokens"),
           py::arg("temperature"), py::arg("top_k"), py::arg("top_p"),
           py::arg("repetition_penalty"), py::arg("seed"), py::arg("recompute"),
           py::keep_alive<1, 2>())
      .def("step",
           [](PyGeneration &p) {
             std::vector<std::pair<size_t, int32_t>> tokens;
             Status s;
             {
               py::gil_scoped_release release;
               std::lock_guard<std::mutex> lock(p.mutex);
               s = p.g->step(tokens);
             }
             if (!s)
               throw std::runtime_error(s.pythonMessage());
             return tokens;
           })
      .def_property_readonly("done",
                             [](const PyGeneration &p) { return p.g->done(); })
      .def(
          "end",
          [](PyGeneration &p, size_t row) {
            if (row >= p.g->generated().size())
              throw py::index_error("no row " + std::to_string(row));
            p.g->end(row);
          },
          py::arg("row"))
      .def_property_readonly(
          "generated", [](const PyGeneration &p) { return p.g->generated(); })
      .def_property_readonly("stats", [](const PyGeneration &p) {
        return statsDict(p.g->stats());
      });

  py::class_<PyKvCache>(m, "KvCache")
      .def(py::init([](Model &model, int64_t batch, int64_t slots) {
             auto p = std::make_unique<PyKvCache>();
             p->model = &model;
             if (Status s = KvCache::create(model, batch, slots, p->cache); !s)
               throw py::value_error(s.pythonMessage());
             return p;
           }),
           py::arg("model"), py::arg("batch"), py::arg("slots"),
           py::keep_alive<1, 2>())
      .def_static(
          "slots_for",
          [](const Model &model, int64_t length) {
            return KvCache::slotsFor(model, length);
          },
          py::arg("model"), py::arg("length"))
      .def(
          "append",
          [](PyKvCache &p, const std::vector<std::vector<int32_t>> &tokens) {
            Tensor logits;
            Status s;
            {
              py::gil_scoped_release release;
              std::lock_guard<std::mutex> lock(p.mutex);
              s = p.cache->append(*p.model, tokens, logits);
            }
            if (!s)
              throw py::value_error(s.pythonMessage());
            py::array_t<float> a(logits.shape());
            std::memcpy(a.mutable_data(), logits.data(), logits.bytes());
            return a;
          },
          py::arg("tokens"))
      .def(
          "set_context",
          [](PyKvCache &p, const py::dict &inputs) {
            // Each input's dtype and rank as the forward declares it.
            std::map<std::string, Tensor> in;
            for (auto item : inputs) {
              std::string name = py::str(item.first);
              const ArgInfo *arg = nullptr;
              for (const FunctionInfo &f : p.model->functions())
                for (const ArgInfo &a : f.inputs)
                  if (!arg && (f.name == "prepare" || f.name == "decode") &&
                      a.name == name)
                    arg = &a;
              if (!arg)
                throw py::value_error("the context takes no input '" + name +
                                      "'");
              in[name] = fromNumpy(name, item.second, arg->dtype,
                                   arg->dims.size(), nullptr);
            }
            Status s;
            {
              py::gil_scoped_release release;
              std::lock_guard<std::mutex> lock(p.mutex);
              s = p.cache->setContext(*p.model, in);
            }
            if (!s)
              throw py::value_error(s.pythonMessage());
          },
          py::arg("inputs"))
      .def_property_readonly(
          "context_inputs",
          [](const PyKvCache &p) { return p.cache->contextInputs(); })
      .def("clear_row",
           [](PyKvCache &p, int64_t row) {
             if (row < 0 || row >= p.cache->batch())
               throw py::index_error("no row " + std::to_string(row));
             p.cache->clearRow(row);
           })
      .def_property_readonly("lengths",
                             [](const PyKvCache &p) {
                               std::vector<int64_t> l;
                               for (int64_t b = 0; b < p.cache->batch(); ++b)
                                 l.push_back(p.cache->length(b));
                               return l;
                             })
      .def_property_readonly(
          "slots", [](const PyKvCache &p) { return p.cache->slots(); })
      .def_property_readonly(
          "rolling", [](const PyKvCache &p) { return p.cache->rolling(); })
      .def_property_readonly(
          "bytes", [](const PyKvCache &p) { return p.cache->bytes(); });
}
