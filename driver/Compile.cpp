//===- Compile.cpp - the one compile entry point --------------------------===//
#include "driver/Compile.h"
#include "codegen/CudaEmitter.h"
#include "codegen/CudaTarget.h"

#include "codegen/KartWriter.h"
#include "driver/Adapter.h"
#include "frontend/AST.h"
#include "ir/AttentionPattern.h"
#include "ir/KilnDialect.h"
#include "runtime/HuggingFace.h"
#include "runtime/Llama2c.h"
#include "runtime/Safetensors.h"
#include "runtime/quant/Serialize.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/AsmState.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/Timing.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

using namespace kiln;

std::optional<CompileStage> kiln::parseStage(llvm::StringRef name) {
  return llvm::StringSwitch<std::optional<CompileStage>>(name)
      .Case("ast", CompileStage::Ast)
      .Case("mlir", CompileStage::Mlir)
      .Case("params", CompileStage::Params)
      .Case("lowered", CompileStage::Lowered)
      .Case("kart", CompileStage::Kart)
      .Case("cuda", CompileStage::Cuda)
      .Default(std::nullopt);
}

void kiln::registerMLIROptions() {
  mlir::registerMLIRContextCLOptions();
  mlir::registerPassManagerCLOptions();
  mlir::registerAsmPrinterCLOptions();
  mlir::registerDefaultTimingManagerCLOptions();
}

namespace {

/// One compilation: the source manager, the context and where errors go.
class Compilation {
public:
  Compilation(const CompileRequest &r, CompileResult &out) : r(r), out(out) {
    // Errors name the user's source line; the op in generic MLIR form would
    // only bury them (kiln-opt keeps MLIR's default).
    ctx.printOpOnDiagnostic(false);
    ctx.getOrLoadDialect<KilnDialect>();
    ctx.getOrLoadDialect<mlir::func::FuncDialect>();
    if (r.captureDiagnostics) {
      capture.emplace(sm, ctx);
    } else {
      printer.emplace(sm, &ctx);
      // Messages that name an option (runtime::optionRef) print it as the
      // command line spells it; the printer shows the rest as they are.
      // (Registered after the printer, so it sees each diagnostic first.)
      ctx.getDiagEngine().registerHandler(
          [this](mlir::Diagnostic &d) -> mlir::LogicalResult {
            std::string text = d.str();
            if (text.find(runtime::Status::kOptionRefStart) ==
                std::string::npos)
              return mlir::failure();
            printer->emitDiagnostic(d.getLocation(),
                                    runtime::spellOptions(text, false),
                                    d.getSeverity());
            for (mlir::Diagnostic &note : d.getNotes())
              printer->emitDiagnostic(note.getLocation(),
                                      runtime::spellOptions(note.str(), false),
                                      note.getSeverity());
            return mlir::success();
          });
    }
  }
  ~Compilation() {
    if (capture)
      out.errors = capture->errors;
  }

  bool run();

private:
  /// An error with no place in the source (a file, a weight, an option).
  bool fail(const std::string &message) {
    if (capture)
      capture->errors.push_back(
          {"", 0, 0, runtime::spellOptions(message, /*python=*/true)});
    else
      llvm::WithColor::error(llvm::errs(), "kiln")
          << runtime::spellOptions(message, /*python=*/false) << "\n";
    return false;
  }
  bool artifactStage() const {
    return r.stage == CompileStage::Kart || r.stage == CompileStage::Lowered ||
           r.stage == CompileStage::Cuda;
  }
  bool checkFunctionNames(mlir::ModuleOp module);
  bool readLora();
  bool writeArtifact(mlir::ModuleOp module);
  bool bindCheckpointHyperparameters(unsigned id, CompileOptions &options);
  bool readWeights(mlir::ModuleOp module, runtime::NamedTensors &weights);

  const CompileRequest &r;
  CompileResult &out;
  llvm::SourceMgr sm;
  mlir::MLIRContext ctx;
  std::optional<DiagnosticCapture> capture;
  std::optional<mlir::SourceMgrDiagnosticHandler> printer;
  /// The adapters asked for (--lora, --adapter) and the adapter's values.
  std::optional<runtime::lora::LoraSpec> lora;
  runtime::NamedTensors adapterTensors;
  /// The kind of --weights and, for a Hugging Face directory, its config.
  enum class WeightsKind { None, Safetensors, Llama2c, HuggingFace };
  WeightsKind weightsKind = WeightsKind::None;
  runtime::HuggingFaceConfig hfConfig;
};

bool Compilation::readLora() {
  namespace rl = runtime::lora;
  std::string error;
  if (!r.lora.empty()) {
    lora.emplace();
    if (!rl::parseLoraSpec(r.lora, *lora, error))
      return fail("LoRA '" + r.lora + "': " + error);
  }
  if (r.adapter.empty())
    return true;
  rl::LoraSpec fromFile;
  if (runtime::Status s = readAdapter(r.adapter, fromFile, adapterTensors); !s)
    return fail(s.text());
  if (!lora) {
    lora = fromFile;
    return true;
  }
  if (lora->rank != fromFile.rank || lora->alpha != fromFile.alpha)
    return fail("the adapter in " + r.adapter + " has rank " +
                std::to_string(fromFile.rank) + " and alpha " +
                std::to_string(fromFile.alpha) + ", but " +
                runtime::optionRef("--lora", "lora=") + " asks for rank " +
                std::to_string(lora->rank) + " and alpha " +
                std::to_string(lora->alpha));
  return true;
}

/// "forward, loss" for messages.
std::string functionList(mlir::ModuleOp module) {
  std::string names;
  for (auto fn : module.getOps<mlir::func::FuncOp>())
    names += (names.empty() ? "" : ", ") + fn.getName().str();
  return names.empty() ? "no functions" : names;
}

bool Compilation::checkFunctionNames(mlir::ModuleOp module) {
  // Names from the command line are checked before any pass runs, so a
  // typo is one clear line rather than a failing pass.
  auto has = [&](const std::string &name) {
    return static_cast<bool>(module.lookupSymbol<mlir::func::FuncOp>(name));
  };
  if (!r.grad.empty() && !has(r.grad))
    return fail("the model has no function '" + r.grad +
                "' to differentiate; it has: " + functionList(module));
  if (r.trainStep) {
    if (!has(r.trainStep->function))
      return fail("the model has no loss function '" + r.trainStep->function +
                  "'; it has: " + functionList(module));
    if (r.grad != r.trainStep->function)
      return fail("a train step differentiates its loss: derive '" +
                  r.trainStep->function + "_grad' as well");
  }
  if (r.recompute && r.grad.empty())
    return fail("recompute applies to the gradient function; give the loss "
                "to differentiate as well (" +
                runtime::optionRef("--grad=FN", "grad=\"loss\"") + ")");
  if ((!r.attentionFunctions.empty() || !r.attentionBlocks.empty()) &&
      r.attention.empty())
    return fail("attention functions and blocks select where an attention "
                "pattern applies; give the pattern as well (" +
                runtime::optionRef("--attention=sliding_window:512",
                                   "attention=\"sliding_window:512\"") +
                ")");
  if (!r.quantizeParams.empty() && r.quantize.empty())
    return fail("the parameters to quantize were given without a "
                "quantization (" +
                runtime::optionRef("--quantize=nf4", "quantize=\"nf4\"") + ")");
  if (!r.quantize.empty()) {
    runtime::quant::QuantSpec spec;
    std::string error;
    if (!runtime::quant::parseQuantSpec(r.quantize, spec, error))
      return fail("quantization '" + r.quantize + "': " + error);
  }
  if (!r.attention.empty()) {
    runtime::attention::PatternSpec spec;
    std::string error;
    if (!parsePatternText(r.attention, spec, error))
      return fail("attention pattern '" + r.attention + "': " + error);
    for (const std::string &name : r.attentionFunctions)
      if (!has(name))
        return fail(
            "the model has no function '" + name +
            "' to give an attention pattern; it has: " + functionList(module));
    for (const std::string &sel : r.attentionBlocks) {
      blockSelected(sel, "", error);
      if (!error.empty())
        return fail(error);
    }
  }
  return true;
}

bool Compilation::run() {
  unsigned id = 0;
  if (!r.path.empty()) {
    id = loadSourceFile(r.path, sm);
    if (!id)
      return false;
  } else {
    id = sm.AddNewSourceBuffer(
        llvm::MemoryBuffer::getMemBufferCopy(r.source, "<string>"),
        llvm::SMLoc());
  }
  llvm::raw_string_ostream os(out.text);
  // The devices the artifact is for: cpu, cuda or both.
  bool cpu = false, cuda = false;
  {
    llvm::SmallVector<llvm::StringRef> names;
    llvm::StringRef(r.target).split(names, ',');
    for (llvm::StringRef n : names) {
      bool &which = n == "cpu" ? cpu : cuda;
      if ((n != "cpu" && n != "cuda") || which)
        return fail(runtime::optionRef("--target=" + r.target,
                                       "target=\"" + r.target + "\"") +
                    ": a target is cpu, cuda or cpu,cuda");
      which = true;
    }
  }
  if (cuda && !artifactStage())
    return fail("a CUDA target applies to artifacts (--emit=kart or plan)");
  if (r.stage == CompileStage::Ast) {
    std::optional<ast::Model> model = parseBuffer(sm, id);
    if (!model)
      return false;
    ast::print(*model, os);
    return true;
  }
  if ((!r.weights.empty() || !r.tokenizerPath.empty() || r.tokenizer ||
       !r.externalWeights.empty() || r.trainStep || !r.adapter.empty()) &&
      !artifactStage())
    return fail("weights, adapters, tokenizers, external weights and train "
                "steps apply to artifacts");

  CompileOptions options;
  options.defines = r.defines;
  if (!bindCheckpointHyperparameters(id, options))
    return false;
  limitParameters(options, artifactStage() && r.externalWeights.empty());
  mlir::OwningOpRef<mlir::ModuleOp> module =
      elaborateBuffer(ctx, sm, id, options);
  if (!module || !checkFunctionNames(*module))
    return false;
  if (r.checkHyperparameters) {
    std::vector<std::pair<std::string, double>> values;
    if (auto hp =
            (*module)->getAttrOfType<mlir::DictionaryAttr>("kiln.hparams"))
      for (mlir::NamedAttribute a : hp) {
        if (auto i = llvm::dyn_cast<mlir::IntegerAttr>(a.getValue()))
          values.emplace_back(a.getName().str(),
                              static_cast<double>(i.getInt()));
        else if (auto f = llvm::dyn_cast<mlir::FloatAttr>(a.getValue()))
          values.emplace_back(a.getName().str(), f.getValueAsDouble());
      }
    if (std::string message = r.checkHyperparameters(values); !message.empty())
      return fail(message);
  }

  // One PassManager for everything, honouring --mlir-timing,
  // --mlir-print-ir-after-all and the other MLIR options when asked.
  mlir::PassManager pm(&ctx);
  CompilePipelineOptions pipeline;
  pipeline.quantize = r.quantize;
  pipeline.quantizeParams = r.quantizeParams;
  if (!readLora())
    return false;
  if (lora) {
    LoraOptions o;
    o.rank = lora->rank;
    o.alpha = lora->alpha;
    o.targets = lora->targets;
    pipeline.lora = o;
  }
  pipeline.attention = r.attention;
  pipeline.attentionFunctions = r.attentionFunctions;
  pipeline.attentionBlocks = r.attentionBlocks;
  pipeline.grad = r.grad;
  pipeline.recompute = r.recompute;
  // Text stages show decode only when asked for; artifacts get it whenever
  // the model is a causal decoder.
  pipeline.decode =
      artifactStage() || r.decode == CompileRequest::Decode::Required
          ? r.decode
          : CompileRequest::Decode::Off;
  if (artifactStage()) {
    pipeline.trainStep = r.trainStep;
    pipeline.fuse = r.fuse;
  }
  buildCompilePipeline(pm, pipeline);
  mlir::DefaultTimingManager timing;
  std::optional<mlir::TimingScope> root;
  if (r.mlirCommandLine) {
    if (mlir::failed(mlir::applyPassManagerCLOptions(pm)))
      return fail("invalid MLIR pass-manager options");
    mlir::applyDefaultTimingManagerCLOptions(timing);
    root.emplace(timing.getRootScope());
    pm.enableTiming(*root);
  }
  if (mlir::failed(pm.run(*module)))
    return false;
  root.reset(); // the timing report prints when the scope ends

  if (r.stage == CompileStage::Mlir) {
    mlir::OpPrintingFlags flags;
    if (r.locations)
      flags.enableDebugInfo(/*enable=*/true, /*prettyForm=*/false)
          .useLocalScope();
    module->print(os, flags);
    return true;
  }
  if (r.stage == CompileStage::Params) {
    printParameterSummary(*module, os);
    return true;
  }
  if (!writeArtifact(*module))
    return false;
  if (r.stage == CompileStage::Lowered)
    module->print(os);
  if (cuda && r.stage != CompileStage::Cuda) {
    CudaTargetOptions options;
    options.cudaOnly = !cpu;
    options.note = [](const std::string &line) {
      llvm::errs() << "kiln: " << line << "\n";
    };
    std::string error;
    if (!addCudaExecutable(out.artifact, options, error))
      return fail(error);
  }
  if (r.stage == CompileStage::Cuda) {
    std::string source, error;
    if (!emitCudaSource(out.artifact.data(), out.artifact.size(), source,
                        error))
      return fail("CUDA code generation: " + error);
    os << source;
  }
  return true;
}

/// Classifies --weights and, for a checkpoint that carries its own
/// hyperparameters (a llama2.c header, a Hugging Face config.json), binds
/// them as overrides; a -D that disagrees is reported against them.
bool Compilation::bindCheckpointHyperparameters(unsigned id,
                                                CompileOptions &options) {
  if (r.weights.empty())
    return true;
  llvm::StringRef weights(r.weights);
  if (runtime::isDirectory(r.weights))
    weightsKind = WeightsKind::HuggingFace;
  else if (weights.ends_with(".bin"))
    weightsKind = WeightsKind::Llama2c;
  else if (weights.ends_with(".safetensors"))
    weightsKind = WeightsKind::Safetensors;
  else
    return fail("weights must be a .safetensors file, a llama2.c .bin "
                "checkpoint or a Hugging Face model directory, got '" +
                r.weights + "'");
  if (weightsKind == WeightsKind::Llama2c) {
    runtime::Llama2cConfig config;
    if (runtime::Status s = runtime::readLlama2cConfig(r.weights, config); !s)
      return fail(s.text());
    for (const auto &[name, value] : config.hyperparameters())
      options.defines.push_back({name, std::to_string(value),
                                 "the header of " + r.weights + " (" + name +
                                     "=" + std::to_string(value) + ")"});
    // A negative vocabulary size in the header marks a separate classifier.
    if (!config.sharedClassifier)
      options.defines.push_back(
          {"tie_word_embeddings", "false",
           "the header of " + r.weights +
               " (a separate classifier: tie_word_embeddings=false)"});
    return true;
  }
  if (weightsKind != WeightsKind::HuggingFace)
    return true;
  if (runtime::Status s = runtime::readHuggingFaceConfig(r.weights, hfConfig);
      !s)
    return fail(s.text());
  std::optional<ast::Model> model = parseBuffer(sm, id);
  if (!model)
    return false;
  // A model named after another architecture kiln maps is the wrong file;
  // a model of the user's own name is trusted to follow model_type's names.
  std::string known = runtime::huggingFaceModelTypes();
  llvm::SmallVector<llvm::StringRef> types;
  llvm::StringRef(known).split(types, ", ");
  if (model->name != hfConfig.modelType &&
      llvm::is_contained(types, model->name))
    return fail(r.weights + "/config.json: model_type '" + hfConfig.modelType +
                "' is a different architecture from " + "model '" +
                model->name + "'");
  // config.json's entries named like the model's hyperparameters bind them
  // (the examples use Hugging Face's config names).
  for (const ast::HParam &h : model->hparams) {
    std::string value;
    if (hfConfig.scalar(h.name, value))
      options.defines.push_back(
          {h.name, value,
           r.weights + "/config.json (" + h.name + "=" + value + ")"});
  }
  return true;
}

/// Reads --weights into tensors named as the model declares them.
bool Compilation::readWeights(mlir::ModuleOp module,
                              runtime::NamedTensors &weights) {
  size_t maxTensors =
      countParameters(module) * runtime::quant::kMaxTensorsPerWeight;
  runtime::Status s = runtime::Status::ok();
  switch (weightsKind) {
  case WeightsKind::None:
    return true;
  case WeightsKind::Llama2c: {
    runtime::Llama2cConfig config;
    s = runtime::readLlama2c(r.weights, config, weights);
    break;
  }
  case WeightsKind::Safetensors:
    s = runtime::readSafetensors(r.weights, weights, maxTensors);
    runtime::widenHalfTensors(weights);
    break;
  case WeightsKind::HuggingFace:
    // Hugging Face checkpoints add buffers and tied copies the mapping
    // drops; allow for them in the bound.
    s = runtime::readHuggingFace(hfConfig, weights, 2 * maxTensors + 16);
    break;
  }
  return s ? true : fail(s.text());
}

bool Compilation::writeArtifact(mlir::ModuleOp module) {
  ArtifactOptions artifact;
  artifact.seed = r.seed;
  if (!r.provenance.empty())
    artifact.history.push_back(r.provenance);
  artifact.annotate = r.stage == CompileStage::Lowered;
  runtime::Tokenizer fromFile;
  std::string tokenizerPath = r.tokenizerPath;
  // A Hugging Face directory's own tokenizer comes along unless one is named.
  if (tokenizerPath.empty() && !r.tokenizer &&
      weightsKind == WeightsKind::HuggingFace &&
      runtime::Tokenizer::inDirectory(r.weights))
    tokenizerPath = r.weights;
  if (!tokenizerPath.empty()) {
    if (runtime::Status s = runtime::Tokenizer::load(tokenizerPath, fromFile);
        !s)
      return fail(s.text());
    artifact.tokenizer = &fromFile;
    artifact.tokenizerSource = tokenizerPath;
  } else if (r.tokenizer) {
    artifact.tokenizer = r.tokenizer;
    artifact.tokenizerSource = r.tokenizerSource;
  }
  runtime::NamedTensors weights;
  if (!readWeights(module, weights))
    return false;
  if (weightsKind != WeightsKind::None)
    artifact.weights = &weights;
  if (!adapterTensors.empty())
    artifact.adapters = &adapterTensors;
  runtime::NamedTensors external;
  if (!r.externalWeights.empty()) {
    // The artifact names the file only; the runtime looks for it beside
    // the artifact, or where the user points when loading.
    artifact.externalWeightsFile =
        llvm::sys::path::filename(r.externalWeights).str();
    artifact.externalWeights = &external;
  }
  if (mlir::failed(kiln::writeArtifact(module, artifact, out.artifact)))
    return false;
  if (!r.externalWeights.empty())
    if (runtime::Status s =
            runtime::writeSafetensors(r.externalWeights, external);
        !s)
      return fail(s.text());
  return true;
}

} // namespace

bool kiln::compile(const CompileRequest &request, CompileResult &result) {
  result = CompileResult();
  bool ok;
  {
    Compilation c(request, result);
    ok = c.run();
  }
  if (!ok && request.captureDiagnostics && result.errors.empty())
    result.errors.push_back({"", 0, 0, "compilation failed"});
  return ok;
}
