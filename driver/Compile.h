//===- Compile.h - the one compile entry point ------------------*- C++ -*-===//
//
// From a .kiln file (or model text) to what the user asked for — the AST,
// kiln IR, the parameter table, the annotated lowered IR or a .kart
// artifact — through one pipeline in one PassManager. `kiln compile`,
// `kiln train` and Python's `kiln.compile` all call `compile()`, so every
// option means the same thing everywhere:
//
//   kiln::CompileRequest r;
//   r.path = "examples/gpt2.kiln";
//   r.grad = "loss";
//   kiln::CompileResult out;
//   if (!kiln::compile(r, out)) { /* errors printed, or in out.errors */ }
//
//===----------------------------------------------------------------------===//
#ifndef KILN_DRIVER_COMPILE_H
#define KILN_DRIVER_COMPILE_H

#include "frontend/Driver.h"
#include "frontend/MLIRGen.h"
#include "passes/Passes.h"
#include "runtime/Tokenizer.h"
#include "runtime/lora/LoraSpec.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace kiln {

/// What a compilation produces.
enum class CompileStage {
  Ast,     // the parsed syntax tree, as text
  Mlir,    // kiln IR after the frontend (and autodiff), as text
  Params,  // the parameter table, as text
  Lowered, // the IR annotated with runtime kernels and slots, and the artifact
  Kart,    // the artifact
  Cuda, // CUDA C++ of the artifact's generated kernels (codegen/CudaEmitter.h)
};

/// The stage named by `--emit` ("ast", "mlir", ...); nullopt if none.
std::optional<CompileStage> parseStage(llvm::StringRef name);

struct CompileRequest {
  /// The model: a .kiln file, or, when `path` is empty, model text.
  std::string path;
  std::string source;
  CompileStage stage = CompileStage::Kart;
  /// Hyperparameter overrides, in command-line order.
  std::vector<Define> defines;
  /// Initializer seed.
  uint64_t seed = 0;
  /// Trained weights: .safetensors (names as in the model) or a llama2.c
  /// .bin checkpoint, whose header also sets the hyperparameters.
  std::string weights;
  /// A llama2.c tokenizer file to carry, or a tokenizer object (kiln train's
  /// character tokenizer) with the words that say where it came from.
  std::string tokenizerPath;
  const runtime::Tokenizer *tokenizer = nullptr;
  std::string tokenizerSource;
  /// Write the weights to this .safetensors file instead of embedding them;
  /// the artifact names the file (runtime/Model.h finds it beside itself).
  std::string externalWeights;
  /// A sparse attention pattern for the model's attention ops, written as
  /// on the command line ("sliding_window:512", ir/AttentionPattern.h),
  /// restricted to some functions and block instances ("h", "h.3",
  /// "h.0-5") when those lists are not empty.
  std::string attention;
  std::vector<std::string> attentionFunctions, attentionBlocks;
  /// Store weights quantized (runtime/quant/QuantSpec.h: "int8",
  /// "int4:group=128", "nf4"): the parameters matching `quantizeParams`
  /// (globs over parameter paths), or by default every matrix that only
  /// feeds matmuls. They are frozen.
  std::string quantize;
  std::vector<std::string> quantizeParams;
  /// LoRA adapters (runtime/lora/LoraSpec.h: "rank=8,alpha=16,targets=GLOB")
  /// beside linear layers, everything else frozen; and/or a PEFT adapter
  /// directory to start them from (driver/Adapter.h), whose config gives
  /// the rank, alpha and targets when `lora` is empty.
  std::string lora;
  std::string adapter;
  /// Derive `grad`_grad (reverse-mode autodiff), recomputing block
  /// activations in it with `recompute`.
  std::string grad;
  bool recompute = false;
  /// Also derive `train_step` (forward, backward and the optimizer update in
  /// one function) for the loss `trainStep->function`; needs `grad`.
  std::optional<TrainStepOptions> trainStep;
  /// Derive `decode` from `forward` (kiln-derive-decode): for every causal
  /// decoder (Auto, in artifacts), always (Required: an error says why it
  /// cannot be), or never.
  using Decode = CompilePipelineOptions::Decode;
  Decode decode = Decode::Auto;
  /// Run the fusion passes (artifact stages).
  bool fuse = true;
  /// The devices the artifact is for (artifact stages): "cpu" (the
  /// default), "cuda" (a CUDA executable that every kernel names: GPU
  /// only) or "cpu,cuda" (both: the device is chosen at run time).
  /// codegen/CudaTarget.h.
  std::string target = "cpu";
  /// Print source locations in `Mlir` text.
  bool locations = false;
  /// Apply MLIR's command-line pass-manager options (--mlir-timing,
  /// --mlir-print-ir-after-all, ...) parsed into LLVM's option registry
  /// (registerMLIROptions).
  bool mlirCommandLine = false;
  /// Collect errors in CompileResult::errors instead of printing them.
  bool captureDiagnostics = false;
  /// How this compile was asked for ("kiln compile examples/gpt2.kiln -D
  /// n_layer=4 -o g.kart"), recorded in the artifact's history.
  std::string provenance;
  /// A tool's check of its own settings against the model (kiln train's
  /// --seq against the model's positions), called once the hyperparameters
  /// are resolved and before the passes run: a non-empty message stops the
  /// compile as an error.
  std::function<std::string(
      const std::vector<std::pair<std::string, double>> &hyperparameters)>
      checkHyperparameters;
};

struct CompileResult {
  /// The artifact (Lowered, Kart).
  std::vector<uint8_t> artifact;
  /// The text (Ast, Mlir, Params, Lowered).
  std::string text;
  /// Errors, when the request captures them: file, line and column when
  /// they have a place in the source.
  std::vector<CapturedDiagnostic> errors;
};

/// Compiles as `request` says. Returns false on any error, which is printed
/// as `file:line:col: error: ...` with the source line (or captured).
bool compile(const CompileRequest &request, CompileResult &result);

/// Registers MLIR's pass-manager, context and printing options with LLVM's
/// command line, for tools that pass `--mlir-*` arguments through
/// llvm::cl::ParseCommandLineOptions. Call once, before parsing.
void registerMLIROptions();

} // namespace kiln

#endif
