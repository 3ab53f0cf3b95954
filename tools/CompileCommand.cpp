//===- CompileCommand.cpp - kiln compile ----------------------------------===//
//
// `kiln compile`: reads a .kiln model, runs the compile driver and writes
// the artifact or one of the intermediate forms (--emit); also the option
// groups compile and train share (--attention, --quantize, --lora).
//
//===----------------------------------------------------------------------===//
#include "codegen/KartWriter.h"
#include "driver/Compile.h"
#include "frontend/Driver.h"
#include "ir/AttentionPattern.h"
#include "ir/KilnDialect.h"
#include "passes/Passes.h"
#include "runtime/File.h"
#include "runtime/Llama2c.h"
#include "runtime/Model.h"
#include "runtime/quant/QuantSpec.h"
#include "tools/Commands.h"
#include "tools/Options.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <string>
#include <unistd.h>
#include <vector>

using kiln::tools::helpText;

using kiln::tools::usageError;

namespace {

/// Writes `text` to `path` (standard output for "" or "-") atomically: an
/// existing file is never left half-written, and a device or pipe (`-o
/// /dev/null`) is written into rather than replaced (runtime/File.h).
int writeOutput(llvm::StringRef path, llvm::StringRef text) {
  if (path.empty() || path == "-") {
    llvm::outs() << text;
    llvm::outs().flush();
    return 0;
  }
  if (kiln::runtime::Status st = kiln::runtime::writeFileAtomically(
          path.str(), {{text.data(), text.size()}});
      !st) {
    llvm::WithColor::error(llvm::errs(), "kiln") << st.message() << "\n";
    return 1;
  }
  return 0;
}

} // namespace

void kiln::tools::AttentionOptions::declare(OptionParser &p) {
  p.text("--attention", pattern,
         "an attention pattern, e.g. --attention=sliding_window:512");
  p.text("--attention-functions", functions,
         "function names, e.g. --attention-functions=forward,loss");
  p.text("--attention-blocks", blocks,
         "block instances, e.g. --attention-blocks=h.0-5");
}

int kiln::tools::AttentionOptions::apply(CompileRequest &r) const {
  if (pattern.empty()) {
    if (!functions.empty() || !blocks.empty())
      return usageError("--attention-functions and --attention-blocks "
                        "select where --attention applies; give the pattern "
                        "too, e.g. --attention=sliding_window:512");
    return -1;
  }
  runtime::attention::PatternSpec spec;
  std::string error;
  if (!parsePatternText(pattern, spec, error))
    return usageError("--attention=" + pattern + ": " + error);
  auto split = [](const std::string &list, std::vector<std::string> &out) {
    llvm::SmallVector<llvm::StringRef> items;
    llvm::StringRef(list).split(items, ',', -1, false);
    for (llvm::StringRef i : items)
      out.push_back(i.trim().str());
  };
  r.attention = pattern;
  split(functions, r.attentionFunctions);
  split(blocks, r.attentionBlocks);
  for (const std::string &sel : r.attentionBlocks) {
    blockSelected(sel, "", error);
    if (!error.empty())
      return usageError("--attention-blocks: " + error);
  }
  return -1;
}

void kiln::tools::QuantizeOptions::declare(OptionParser &p) {
  p.text("--quantize", spec,
         "a quantization, e.g. --quantize=nf4 or --quantize=int4:group=128");
  p.text("--quantize-params", params,
         "parameter globs, e.g. --quantize-params='h.*.mlp.*'");
}

int kiln::tools::QuantizeOptions::apply(CompileRequest &r) const {
  if (spec.empty()) {
    if (!params.empty())
      return usageError("--quantize-params selects what --quantize stores "
                        "quantized; give the quantization too, e.g. "
                        "--quantize=nf4");
    return -1;
  }
  runtime::quant::QuantSpec parsed;
  std::string error;
  if (!runtime::quant::parseQuantSpec(spec, parsed, error))
    return usageError("--quantize=" + spec + ": " + error);
  r.quantize = spec;
  llvm::SmallVector<llvm::StringRef> items;
  llvm::StringRef(params).split(items, ',', -1, false);
  for (llvm::StringRef i : items)
    r.quantizeParams.push_back(i.trim().str());
  return -1;
}

void kiln::tools::AdapterOptions::declare(OptionParser &p) {
  p.text(
      "--lora", lora,
      "LoRA adapters, e.g. --lora=rank=8,alpha=16,targets='*.c_attn.weight'");
  p.text("--adapter", adapter,
         "a PEFT adapter directory (adapter_config.json, "
         "adapter_model.safetensors)");
}

int kiln::tools::AdapterOptions::apply(CompileRequest &r) const {
  if (!lora.empty()) {
    runtime::lora::LoraSpec parsed;
    std::string error;
    if (!runtime::lora::parseLoraSpec(lora, parsed, error))
      return usageError("--lora=" + lora + ": " + error);
  }
  r.lora = lora;
  r.adapter = adapter;
  return -1;
}

void kiln::tools::OptimizerOptions::declare(OptionParser &p) {
  // The trainer and the train-step pass check their ranges (e.g. beta1 in
  // [0, 1)) and say which.
  const double inf = INFINITY;
  p.real("--weight-decay", config.weightDecay, -inf, inf);
  p.real("--beta1", config.beta1, -inf, inf);
  p.real("--beta2", config.beta2, -inf, inf);
  p.real("--eps", config.eps, -inf, inf);
  p.real("--momentum", config.momentum, -inf, inf);
  p.real("--clip", config.clipNorm, -inf, inf);
  p.choice("--optimizer", config.optimizer, {"adamw", "sgd"});
}

void kiln::tools::OptimizerOptions::warnUnused(OptionParser &p) const {
  if (config.optimizer == "sgd")
    p.unused({"--beta1", "--beta2", "--eps"},
             "with --optimizer=sgd (they are AdamW's)");
  else
    p.unused({"--momentum"}, "with --optimizer=adamw (it is SGD's; add "
                             "--optimizer=sgd)");
}

kiln::TrainStepOptions
kiln::tools::OptimizerOptions::step(const std::string &function) const {
  kiln::TrainStepOptions step;
  step.function = function;
  step.optimizer = config.optimizer;
  step.beta1 = config.beta1;
  step.beta2 = config.beta2;
  step.eps = config.eps;
  step.weightDecay = config.weightDecay;
  step.momentum = config.momentum;
  step.maxNorm = std::max(0.0, config.clipNorm);
  return step;
}

void kiln::tools::OptimizerOptions::into(runtime::TrainConfig &train) const {
  train.optimizer = config.optimizer;
  train.beta1 = config.beta1;
  train.beta2 = config.beta2;
  train.eps = config.eps;
  train.weightDecay = config.weightDecay;
  train.momentum = config.momentum;
  train.clipNorm = config.clipNorm;
}

int kiln::tools::compileCommand(const std::vector<std::string> &args) {
  AttentionOptions attention;
  QuantizeOptions quantize;
  AdapterOptions adapters;
  OptimizerOptions optimizer;
  bool trainStep = false;
  std::string output, emit;
  std::string saveWeightsPath;
  std::vector<std::string> mlirOptions;
  kiln::CompileRequest r;
  kiln::tools::OptionParser p("compile");
  p.positional(r.path, "model file");
  p.text("--emit", emit,
         "a stage: ast, mlir, lowered, params, kart, plan or cuda");
  p.text("--output", output, "a file, e.g. -o model.kart");
  p.alias("-o", "--output");
  p.custom("--define", [&](llvm::StringRef def) {
    auto [name, value] = def.split('=');
    if (!def.contains('=') || name.trim().empty() || value.trim().empty())
      return usageError("-D expects NAME=VALUE, got '" + def.take_front(60) +
                        "'");
    r.defines.push_back({name.trim().str(), value.trim().str(), ""});
    return 0;
  });
  p.alias("-D", "--define");
  p.flag("--locations", r.locations);
  p.text("--grad", r.grad, "a function name, e.g. --grad=loss");
  p.text("--external-weights", r.externalWeights,
         "a file, e.g. --external-weights=model.safetensors");
  p.text("--save-weights", saveWeightsPath,
         "a file, e.g. --save-weights=init.safetensors");
  p.text("--weights", r.weights,
         "a .safetensors or llama2.c .bin file, e.g. --weights=model.bin");
  p.text("--tokenizer", r.tokenizerPath,
         "tokenizer files, e.g. --tokenizer=tok512.bin or "
         "--tokenizer=gpt2:DIR");
  p.seed("--seed", r.seed);
  p.flag("--recompute", r.recompute);
  p.flag("--train-step", trainStep);
  optimizer.declare(p);
  p.flag("--no-fuse", r.fuse, false);
  p.text("--target", r.target, "devices: cpu, cuda or cpu,cuda");
  bool decode = false, noDecode = false;
  p.flag("--decode", decode);
  p.flag("--no-decode", noDecode);
  attention.declare(p);
  quantize.declare(p);
  adapters.declare(p);
  // MLIR's own options (--mlir-timing, --mlir-print-ir-after-all, ...).
  p.prefix("--mlir-", mlirOptions);
  if (int rc = p.parse(args); rc >= 0)
    return rc;
  if (decode && noDecode)
    return usageError("give --decode or --no-decode, not both");
  if (decode || noDecode)
    r.decode =
        decode ? CompileRequest::Decode::Required : CompileRequest::Decode::Off;
  if (r.path.empty())
    return usageError("'kiln compile' needs a model file, e.g. "
                      "'kiln compile examples/gpt2.kiln'");
  // Without --emit, the output's name decides: .kart an artifact, anything
  // else the IR, said on stderr unless the name says so (.mlir).
  bool sayWhatIsWritten = false;
  if (emit.empty()) {
    llvm::StringRef out(output);
    emit = out.ends_with(".kart") ? "kart" : "mlir";
    sayWhatIsWritten =
        emit == "mlir" && !out.empty() && out != "-" && !out.ends_with(".mlir");
  }
  bool plan = emit == "plan";
  std::optional<kiln::CompileStage> stage =
      plan ? kiln::CompileStage::Kart : kiln::parseStage(emit);
  if (!stage)
    return usageError("unknown --emit stage '" + emit +
                      "'; use ast, mlir, lowered, params, kart, plan or cuda");
  r.stage = *stage;
  bool artifact = r.stage == kiln::CompileStage::Kart ||
                  r.stage == kiln::CompileStage::Lowered ||
                  r.stage == kiln::CompileStage::Cuda;
  if ((!r.weights.empty() || !saveWeightsPath.empty() ||
       !r.externalWeights.empty() || !r.tokenizerPath.empty()) &&
      !artifact)
    return usageError("--weights, --tokenizer, --save-weights and "
                      "--external-weights apply to artifacts (--emit=kart, "
                      "plan or lowered)");
  if (!r.externalWeights.empty() && (emit != "kart"))
    return usageError("--external-weights needs an artifact written with -o "
                      "FILE.kart");
  if (emit == "kart" && (output.empty() || output == "-"))
    return usageError("--emit=kart writes a binary artifact; give a file "
                      "with -o");
  if (!r.weights.empty() && !llvm::StringRef(r.weights).ends_with(".bin") &&
      !llvm::StringRef(r.weights).ends_with(".safetensors") &&
      !llvm::sys::fs::is_directory(r.weights))
    return usageError("--weights takes a .safetensors file, a llama2.c .bin "
                      "checkpoint or a Hugging Face model directory, got '" +
                      r.weights + "'");
  if (r.recompute && r.grad.empty())
    return usageError("--recompute applies to the gradient function; add "
                      "--grad=FN");
  if (trainStep) {
    if (r.grad.empty())
      return usageError("--train-step compiles a training step from the "
                        "gradient; add --grad=FN (the loss)");
    optimizer.warnUnused(p);
    r.trainStep = optimizer.step(r.grad);
  } else {
    p.unused({"--optimizer", "--beta1", "--beta2", "--eps", "--momentum",
              "--weight-decay", "--clip"},
             "without --train-step");
  }
  if (int rc = quantize.apply(r); rc >= 0)
    return rc;
  if (int rc = adapters.apply(r); rc >= 0)
    return rc;
  if (int rc = attention.apply(r); rc >= 0)
    return rc;
  if (!mlirOptions.empty()) {
    // Through LLVM's option registry, where MLIR reads them.
    kiln::registerMLIROptions();
    std::vector<const char *> argv = {"kiln compile"};
    for (const std::string &o : mlirOptions)
      argv.push_back(o.c_str());
    std::string errors;
    llvm::raw_string_ostream es(errors);
    if (!llvm::cl::ParseCommandLineOptions(static_cast<int>(argv.size()),
                                           argv.data(), "", &es))
      return usageError(llvm::StringRef(errors).trim().str());
    r.mlirCommandLine = true;
  }
  if (!r.externalWeights.empty()) {
    llvm::SmallString<256> absExternal(r.externalWeights), absOut(output);
    llvm::sys::fs::make_absolute(absExternal);
    llvm::sys::fs::make_absolute(absOut);
    if (llvm::sys::path::parent_path(absExternal) !=
        llvm::sys::path::parent_path(absOut))
      llvm::WithColor::note(llvm::errs(), "kiln")
          << output << " expects its weights beside it, as "
          << llvm::sys::path::filename(absExternal) << "; move "
          << r.externalWeights
          << " there, or load with --weights-file=" << r.externalWeights
          << "\n";
  }

  kiln::CompileResult result;
  r.provenance = kiln::tools::commandLine("compile", args);
  if (!kiln::compile(r, result))
    return 1;
  kiln::runtime::LoadOptions load;
  load.weightsFile = r.externalWeights;
  if (!saveWeightsPath.empty()) {
    std::unique_ptr<kiln::runtime::Model> model;
    kiln::runtime::Status st =
        kiln::runtime::Model::fromBytes(result.artifact, model, ".", load);
    if (st)
      st = model->saveWeights(saveWeightsPath);
    if (!st) {
      llvm::WithColor::error(llvm::errs(), "kiln") << st.message() << "\n";
      return 1;
    }
  }
  if (emit == "kart")
    return writeOutput(output, llvm::StringRef(reinterpret_cast<const char *>(
                                                   result.artifact.data()),
                                               result.artifact.size()));
  if (plan) {
    std::unique_ptr<kiln::runtime::Model> model;
    if (kiln::runtime::Status st = kiln::runtime::Model::fromBytes(
            std::move(result.artifact), model, ".", load);
        !st) {
      llvm::WithColor::error(llvm::errs(), "kiln")
          << "the generated artifact does not load: " << st.message() << "\n";
      return 1;
    }
    return writeOutput(
        output, kiln::tools::describeModel(*model, {}, /*withPlan=*/true));
  }
  int rc = writeOutput(output, result.text);
  if (rc == 0 && sayWhatIsWritten)
    llvm::WithColor::note(llvm::errs(), "kiln")
        << "wrote the IR (--emit=mlir) to " << output
        << "; for an artifact, name it .kart or add --emit=kart\n";
  return rc;
}
