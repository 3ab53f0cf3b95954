//===- compiler.cpp - Python bindings: the compiler -----------------------===//
//
// kiln.compile() and CompiledModel.ir(): the one compile driver
// (driver/Compile.h) that `kiln compile` and `kiln train` use, with
// diagnostics collected (file, line, column, message) for kiln.CompileError
// instead of printed.
//
//===----------------------------------------------------------------------===//
#include "bindings.h"

#include "driver/Compile.h"

#include <pybind11/stl.h>

namespace py = pybind11;
using namespace kiln;

namespace {

/// (ok, result, errors): result is bytes for "kart", text otherwise (for
/// "lowered", (text, bytes)); errors are (file, line, column, message)
/// tuples.
py::tuple compileRequest(CompileRequest r, const std::string &stage) {
  r.captureDiagnostics = true;
  CompileResult out;
  bool ok;
  {
    py::gil_scoped_release release;
    ok = kiln::compile(r, out);
  }
  py::list errs;
  for (const CapturedDiagnostic &d : out.errors)
    errs.append(py::make_tuple(d.file, d.line, d.column, d.message));
  py::object result = py::none();
  if (ok)
    result = stage == "kart"
                 ? py::object(py::bytes(
                       reinterpret_cast<const char *>(out.artifact.data()),
                       out.artifact.size()))
                 : py::object(py::str(out.text));
  return py::make_tuple(ok, result, errs);
}

} // namespace

void kiln::python::registerCompiler(py::module_ &m) {
  m.def(
      "compile",
      [](const std::string &source, bool isPath,
         const std::vector<std::pair<std::string, std::string>> &defines,
         uint64_t seed, const std::string &weights,
         const std::string &tokenizer, const std::string &grad, bool recompute,
         bool fuse, const std::string &stage,
         const std::string &externalWeights, py::object trainStep,
         const std::string &attention,
         const std::vector<std::string> &attentionFunctions,
         const std::vector<std::string> &attentionBlocks,
         const std::string &quantize,
         const std::vector<std::string> &quantizeParams,
         const std::string &lora, const std::string &adapter,
         const std::string &decode, const std::string &provenance,
         const std::string &target) {
        CompileRequest r;
        r.target = target;
        r.provenance = provenance;
        if (decode == "off")
          r.decode = CompileRequest::Decode::Off;
        else if (decode == "required")
          r.decode = CompileRequest::Decode::Required;
        else if (decode != "auto")
          throw py::value_error("decode must be None, True or False");
        (isPath ? r.path : r.source) = source;
        for (const auto &[k, v] : defines)
          r.defines.push_back({k, v, ""});
        r.seed = seed;
        r.weights = weights;
        r.tokenizerPath = tokenizer;
        r.grad = grad;
        r.recompute = recompute;
        r.fuse = fuse;
        r.externalWeights = externalWeights;
        r.attention = attention;
        r.attentionFunctions = attentionFunctions;
        r.attentionBlocks = attentionBlocks;
        r.quantize = quantize;
        r.quantizeParams = quantizeParams;
        r.lora = lora;
        r.adapter = adapter;
        std::optional<CompileStage> s = parseStage(stage);
        if (!s)
          throw py::value_error("unknown stage '" + stage + "'");
        r.stage = *s;
        if (!trainStep.is_none()) {
          // {"optimizer": "adamw", "beta1": ..., "max_norm": ...}
          py::dict d = trainStep.cast<py::dict>();
          TrainStepOptions t;
          t.function = grad;
          auto real = [&](const char *key, double &into) {
            if (d.contains(key))
              into = d[key].cast<double>();
          };
          if (d.contains("optimizer"))
            t.optimizer = d["optimizer"].cast<std::string>();
          real("beta1", t.beta1);
          real("beta2", t.beta2);
          real("eps", t.eps);
          real("weight_decay", t.weightDecay);
          real("momentum", t.momentum);
          real("max_norm", t.maxNorm);
          r.trainStep = t;
        }
        return compileRequest(std::move(r), stage);
      },
      py::arg("source"), py::arg("is_path"), py::arg("defines"),
      py::arg("seed"), py::arg("weights"), py::arg("tokenizer"),
      py::arg("grad"), py::arg("recompute"), py::arg("fuse"), py::arg("stage"),
      py::arg("external_weights") = "", py::arg("train_step") = py::none(),
      py::arg("attention") = "",
      py::arg("attention_functions") = std::vector<std::string>(),
      py::arg("attention_blocks") = std::vector<std::string>(),
      py::arg("quantize") = "",
      py::arg("quantize_params") = std::vector<std::string>(),
      py::arg("lora") = "", py::arg("adapter") = "", py::arg("decode") = "auto",
      py::arg("provenance") = "", py::arg("target") = "cpu",
      "Compiles a model through kiln's one compile driver; returns (ok, bytes "
      "or text, [(file, line, column, message)]).");
}
