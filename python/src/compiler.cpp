//===- compiler.cpp - Python bindings: the compiler -----------------------===//
//
// kiln.compile() and CompiledModel.ir(): the same frontend, autodiff and
// artifact writer as `kiln compile`, with diagnostics collected (file, line,
// column, message) for kiln.CompileError instead of printed.
//
//===----------------------------------------------------------------------===//
#include "bindings.h"

#include "codegen/KartWriter.h"
#include "frontend/AST.h"
#include "frontend/Driver.h"
#include "ir/KilnDialect.h"
#include "passes/Passes.h"
#include "runtime/Llama2c.h"
#include "runtime/Safetensors.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <pybind11/stl.h>

namespace py = pybind11;
using namespace kiln;

namespace {

struct Request {
  std::string source; // a path, or model text when isPath is false
  bool isPath = true;
  std::vector<std::pair<std::string, std::string>> defines;
  uint64_t seed = 0;
  std::string weights; // .safetensors or llama2.c .bin
  std::string tokenizer; // a llama2.c tokenizer.bin to carry
  std::string grad;    // differentiate this loss function
  bool recompute = false;
  bool fuse = true;
  std::string stage = "kart"; // kart, ast, mlir, lowered, params
};

/// (ok, result, errors): result is bytes for "kart", text otherwise; errors
/// are (file, line, column, message) tuples.
py::tuple compile(const Request &r) {
  std::vector<CapturedDiagnostic> errors;
  std::vector<uint8_t> bytes;
  std::string text;
  bool ok = false;
  {
    py::gil_scoped_release release;
    mlir::MLIRContext ctx;
    // Errors name the user's source line; the op in generic MLIR form
    // would only bury them (kiln-opt keeps MLIR's default).
    ctx.printOpOnDiagnostic(false);
    ctx.getOrLoadDialect<KilnDialect>();
    ctx.getOrLoadDialect<mlir::func::FuncDialect>();
    llvm::SourceMgr sm;
    DiagnosticCapture capture(sm, ctx);
    ok = [&]() -> bool {
      auto fail = [&](const std::string &msg) {
        capture.errors.push_back({"", 0, 0, msg});
        return false;
      };
      unsigned id = 0;
      if (r.isPath) {
        id = loadSourceFile(r.source, sm);
        if (!id)
          return fail(r.source + ": cannot read the model file");
      } else {
        id = sm.AddNewSourceBuffer(
            llvm::MemoryBuffer::getMemBufferCopy(r.source, "<string>"),
            llvm::SMLoc());
      }
      CompileOptions options;
      for (const auto &[k, v] : r.defines)
        options.defines.push_back({k, v, ""});
      runtime::NamedTensors weights;
      bool llama2c = llvm::StringRef(r.weights).ends_with(".bin");
      if (llama2c) {
        runtime::Llama2cConfig config;
        if (runtime::Status s = runtime::readLlama2cConfig(r.weights, config);
            !s)
          return fail(s.message());
        for (const auto &[name, value] : config.hyperparameters())
          options.defines.push_back({name, std::to_string(value),
                                     "the header of " + r.weights + " (" +
                                         name + "=" + std::to_string(value) +
                                         ")"});
      }
      llvm::raw_string_ostream os(text);
      if (r.stage == "ast") {
        std::optional<ast::Model> model = parseBuffer(sm, id);
        if (!model)
          return false;
        ast::print(*model, os);
        return true;
      }
      // Python artifacts embed their weights.
      limitParameters(options, r.stage == "kart" || r.stage == "lowered");
      mlir::OwningOpRef<mlir::ModuleOp> module =
          compileBuffer(ctx, sm, id, options);
      if (!module)
        return false;
      if (!r.grad.empty()) {
        mlir::PassManager pm(&ctx);
        AutodiffOptions autodiff;
        autodiff.function = r.grad;
        autodiff.recompute = r.recompute;
        pm.addPass(createAutodiff(autodiff));
        pm.addPass(mlir::createCanonicalizerPass());
        pm.addPass(mlir::createCSEPass());
        if (mlir::failed(pm.run(*module)))
          return false;
      }
      if (r.stage == "mlir") {
        module->print(os);
        return true;
      }
      if (r.stage == "params") {
        printParameterSummary(*module, os);
        return true;
      }
      if (r.fuse && mlir::failed(kiln::fuse(*module)))
        return false;
      ArtifactOptions artifact;
      artifact.seed = r.seed;
      artifact.annotate = r.stage == "lowered";
      runtime::Tokenizer tokenizer;
      if (!r.tokenizer.empty()) {
        if (runtime::Status s =
                runtime::Tokenizer::readLlama2c(r.tokenizer, tokenizer);
            !s)
          return fail(s.message());
        artifact.tokenizer = &tokenizer;
        artifact.tokenizerSource = r.tokenizer;
      }
      if (!r.weights.empty()) {
        runtime::Llama2cConfig config;
        runtime::Status s =
            llama2c ? runtime::readLlama2c(r.weights, config, weights)
                    : runtime::readSafetensors(r.weights, weights,
                                               countParameters(*module));
        if (!s)
          return fail(s.message());
        artifact.weights = &weights;
      }
      if (mlir::failed(writeArtifact(*module, artifact, bytes)))
        return false;
      if (r.stage == "lowered")
        module->print(os);
      return true;
    }();
    errors = capture.errors;
  }
  py::list errs;
  for (const CapturedDiagnostic &d : errors)
    errs.append(py::make_tuple(d.file, d.line, d.column, d.message));
  if (!ok && errors.empty())
    errs.append(py::make_tuple("", 0, 0, "compilation failed"));
  py::object result = py::none();
  if (ok)
    result =
        r.stage == "kart"
            ? py::object(py::bytes(reinterpret_cast<const char *>(bytes.data()),
                                   bytes.size()))
            : py::object(py::str(text));
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
         bool fuse, const std::string &stage) {
        Request r{source, isPath, defines,   seed, weights,
                  tokenizer, grad, recompute, fuse, stage};
        return compile(r);
      },
      py::arg("source"), py::arg("is_path"), py::arg("defines"),
      py::arg("seed"), py::arg("weights"), py::arg("tokenizer"),
      py::arg("grad"),
      py::arg("recompute"), py::arg("fuse"), py::arg("stage"),
      "Compiles a model; returns (ok, bytes or text, [(file, line, column, "
      "message)]).");
}
