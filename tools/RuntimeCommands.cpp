//===- RuntimeCommands.cpp - kiln run / inspect ---------------------------===//
//
// These commands use only the runtime library, as a deployed program would.
//
//===----------------------------------------------------------------------===//
#include "runtime/attention/Layout.h"
#include "tools/Commands.h"
#include "tools/Options.h"

#include "runtime/Generate.h"
#include "runtime/Memory.h"
#include "runtime/Model.h"
#include "runtime/Npy.h"
#include "runtime/Random.h"

#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>

using namespace kiln::runtime;

namespace kiln::tools {

namespace {

int fail(const std::string &msg) {
  std::cerr << "kiln: error: " << msg << "\n";
  return 1;
}

std::string signature(const ArgInfo &a) {
  std::string s = a.name + ": " + dtypeName(a.dtype) + "[";
  for (size_t i = 0; i < a.dims.size(); ++i)
    s += (i ? ", " : "") + a.dims[i];
  return s + "]";
}

/// Prints a tensor compactly: its type, then up to 8 leading values.
void printTensor(const std::string &name, const Tensor &t) {
  std::cout << name << ": " << t.describe() << " =";
  int64_t n = std::min<int64_t>(t.numel(), 8);
  for (int64_t i = 0; i < n; ++i) {
    switch (t.dtype()) {
    case DType::F32:
      std::cout << " " << t.as<float>()[i];
      break;
    case DType::F64:
      std::cout << " " << t.as<double>()[i];
      break;
    case DType::I32:
      std::cout << " " << t.as<int32_t>()[i];
      break;
    case DType::I64:
      std::cout << " " << t.as<int64_t>()[i];
      break;
    default:
      std::cout << " " << int(t.as<uint8_t>()[i]);
      break;
    }
  }
  if (t.numel() > n)
    std::cout << " ...";
  std::cout << "\n";
}

bool parseDims(const std::string &text, std::map<std::string, int64_t> &dims,
               std::string &error) {
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      error = "--dims expects NAME=SIZE[,NAME=SIZE...], got '" + text + "'";
      return false;
    }
    std::string v = item.substr(eq + 1);
    char *end = nullptr;
    long long n = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end || n <= 0 || n > (1ll << 32)) {
      error = "--dims: '" + v + "' is not a positive size";
      return false;
    }
    dims[item.substr(0, eq)] = n;
  }
  return true;
}

} // namespace

void ProfileOption::declare(OptionParser &p) {
  p.text("--profile", path, "a trace file, e.g. --profile=trace.json");
}

void ProfileOption::attach(Model &model) {
  if (path.empty())
    return;
  profiler = std::make_shared<Profiler>();
  model.setProfiler(profiler);
}

int ProfileOption::write() const {
  if (!profiler)
    return 0;
  if (Status s = profiler->writeTrace(path); !s)
    return fail(s.message());
  size_t slices = profiler->slices().size();
  uint64_t dropped = profiler->dropped();
  llvm::WithColor::note(llvm::errs(), "kiln")
      << "wrote a trace of " << slices << " slices to " << path
      << (dropped ? " (the first " + std::to_string(slices) + "; " +
                        std::to_string(dropped) +
                        " more were not kept: profile a shorter run)"
                  : std::string())
      << "; open it in ui.perfetto.dev or chrome://tracing, or list the "
         "top kernels with 'kiln inspect --profile="
      << path << "'\n";
  return 0;
}

/// Options of every command that loads an artifact.
void artifactOptions(OptionParser &p, std::string &path, LoadOptions &load) {
  p.positional(path, "artifact");
  p.text("--weights-file", load.weightsFile,
         "the external weights of an artifact compiled with "
         "--external-weights, e.g. --weights-file=w.safetensors");
}

void deviceOption(OptionParser &p, LoadOptions &load) {
  p.text("--device", load.device, "a device: cpu, cuda or cuda:N");
}

namespace {

/// Loads the artifact of `kiln <command>`: -1 to go on, else the exit
/// status (the message printed). A model source gets the command that
/// compiles it.
int loadArtifact(llvm::StringRef command, const std::string &path,
                 std::unique_ptr<Model> &model, const LoadOptions &load = {}) {
  if (llvm::StringRef(path).ends_with(".kiln")) {
    std::string kart = llvm::StringRef(path).drop_back(5).str() + ".kart";
    return usageError("'" + path + "' is a model source; 'kiln " +
                      command.str() +
                      "' takes a compiled artifact: run 'kiln "
                      "compile " +
                      path + " -o " + kart + "' first, then 'kiln " +
                      command.str() + " " + kart + "'");
  }
  if (Status s = Model::load(path, model, load); !s)
    return fail(s.message());
  return -1;
}

} // namespace

int runCommand(const std::vector<std::string> &args) {
  std::string path, function = "forward";
  std::map<std::string, Tensor> inputs;
  std::vector<std::string> outputs;
  std::string outputDir;
  int64_t repeat = 0;
  int threads = 0;
  std::string kernels;
  LoadOptions load;
  OptionParser p("run");
  p.choice("--kernels", kernels, {"fast", "reference"});
  artifactOptions(p, path, load);
  deviceOption(p, load);
  p.integer("--threads", threads, limits::kThreads);
  p.integer("--repeat", repeat, limits::kRepeat);
  p.text("--function", function, "a function name, e.g. --function=loss");
  p.custom("--input", [&](llvm::StringRef v) {
    // NAME=FILE.npy, or NAME=@FILE.npy as before.
    std::string spec = v.str();
    size_t eq = spec.find('=');
    std::string file = eq == std::string::npos ? "" : spec.substr(eq + 1);
    if (!file.empty() && file[0] == '@')
      file.erase(0, 1);
    if (eq == std::string::npos || eq == 0 || file.empty())
      return usageError("--input expects NAME=FILE.npy, got '" + spec + "'");
    std::string name = spec.substr(0, eq);
    if (inputs.count(name))
      return usageError("input '" + name + "' is given twice");
    Tensor t;
    if (Status s = readNpy(file, t); !s)
      return fail("input '" + name + "': " + s.message());
    inputs.emplace(name, std::move(t));
    return 0;
  });
  p.custom("--output", [&](llvm::StringRef v) {
    // FILE.npy, or @FILE.npy as before.
    llvm::StringRef file = v.starts_with("@") ? v.drop_front() : v;
    if (file.empty())
      return usageError("--output expects FILE.npy, got '" + v + "'");
    outputs.push_back(file.str());
    return 0;
  });
  p.text("--output-dir", outputDir, "a directory, e.g. --output-dir=out");
  ProfileOption profile;
  profile.declare(p);
  if (int rc = p.parse(args); rc >= 0)
    return rc;
  if (!outputDir.empty() && !outputs.empty())
    return usageError("give --output or --output-dir, not both");
  if (path.empty())
    return usageError("'kiln run' needs an artifact, e.g. 'kiln run "
                      "model.kart --input=tokens=tokens.npy'");
  std::unique_ptr<Model> model;
  if (int rc = loadArtifact("run", path, model, load); rc >= 0)
    return rc;
  model->setThreads(threads);
  profile.attach(*model);
  RunOptions run;
  if (!kernels.empty())
    run.kernels =
        kernels == "reference" ? KernelChoice::Reference : KernelChoice::Fast;
  std::vector<Tensor> results;
  if (Status s = model->run(function, inputs, results, run); !s)
    return fail(s.message());
  if (repeat > 0) {
    // Timing after one warm-up run (primitives created, arena allocated).
    std::vector<double> ms;
    for (int64_t r = 0; r < repeat; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      if (Status s = model->run(function, inputs, results, run); !s)
        return fail(s.message());
      ms.push_back(std::chrono::duration<double, std::milli>(
                       std::chrono::steady_clock::now() - t0)
                       .count());
    }
    std::sort(ms.begin(), ms.end());
    std::cerr << "kiln: " << function << ": median " << ms[ms.size() / 2]
              << " ms, min " << ms.front() << " ms over " << repeat << " runs, "
              << (threads ? threads : numThreads()) << " threads\n";
  }
  if (int rc = profile.write())
    return rc;
  // The results by the names the artifact gives them ("logits", "loss",
  // "wte.weight.grad"; "result0" in artifacts written before names).
  const FunctionInfo *info = nullptr;
  for (const FunctionInfo &f : model->functions())
    if (f.name == function)
      info = &f;
  auto nameOf = [&](size_t i) {
    return info && i < info->outputs.size() ? info->outputs[i].name
                                            : "result" + std::to_string(i);
  };
  if (!outputDir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(outputDir, ec);
    if (ec)
      return fail(outputDir + ": cannot create the directory: " + ec.message());
    for (size_t i = 0; i < results.size(); ++i)
      if (Status s = writeNpy(outputDir + "/" + nameOf(i) + ".npy", results[i]);
          !s)
        return fail(s.message());
    return 0;
  }
  if (outputs.size() == 1 && llvm::StringRef(outputs[0]).ends_with(".npz")) {
    std::vector<std::pair<std::string, const Tensor *>> all;
    for (size_t i = 0; i < results.size(); ++i)
      all.emplace_back(nameOf(i), &results[i]);
    if (Status s = writeNpz(outputs[0], all); !s)
      return fail(s.message());
    return 0;
  }
  if (outputs.size() > results.size())
    return usageError(std::to_string(outputs.size()) + " --output files for " +
                      std::to_string(results.size()) + " result(s) of '" +
                      function + "'");
  for (size_t i = 0; i < results.size(); ++i) {
    if (i < outputs.size()) {
      if (llvm::StringRef(outputs[i]).ends_with(".npz"))
        return usageError("--output=" + outputs[i] +
                          ": a .npz archive takes all the results; give it "
                          "as the only --output");
      if (Status s = writeNpy(outputs[i], results[i]); !s)
        return fail(s.message());
    } else {
      printTensor(nameOf(i), results[i]);
    }
  }
  return 0;
}

int inspectCommand(const std::vector<std::string> &args) {
  std::string path, dimsText;
  bool withPlan = false;
  int64_t layoutT = 0;
  LoadOptions load;
  OptionParser p("inspect");
  artifactOptions(p, path, load);
  p.text("--dims", dimsText, "NAME=SIZE[,NAME=SIZE...], e.g. --dims=B=1,T=128");
  p.flag("--plan", withPlan);
  p.integer("--attention-layout", layoutT, limits::kSeq);
  std::string trace;
  int64_t top = 20;
  p.text("--profile", trace, "a trace file, e.g. --profile=trace.json");
  p.integer("--top", top, {1, 100000});
  if (int rc = p.parse(args); rc >= 0)
    return rc;
  if (!trace.empty()) {
    // A trace of kiln run/train/generate --profile: the kernels that took
    // the time. It stands alone (the slices name their ops and places).
    if (!path.empty() || !dimsText.empty() || withPlan || layoutT)
      return usageError("--profile reads a trace on its own; give the "
                        "artifact in a separate 'kiln inspect'");
    std::vector<ProfileSlice> slices;
    if (Status s = readTrace(trace, slices); !s)
      return fail(s.message());
    std::cout << profileSummary(slices, static_cast<size_t>(top));
    return 0;
  }
  p.unused({"--top"}, "without --profile");
  if (path.empty())
    return usageError("'kiln inspect' needs an artifact (or --profile=TRACE)");
  std::map<std::string, int64_t> dims;
  std::string error;
  if (!dimsText.empty() && !parseDims(dimsText, dims, error))
    return usageError(error);
  std::unique_ptr<Model> model;
  if (int rc = loadArtifact("inspect", path, model, load); rc >= 0)
    return rc;
  // Every name must be one of the model's symbolic dimensions.
  std::set<std::string> known;
  for (const FunctionInfo &f : model->functions())
    for (const auto *args : {&f.inputs, &f.outputs})
      for (const ArgInfo &a : *args)
        for (const std::string &d : a.dims)
          if (!d.empty() && !std::isdigit(static_cast<unsigned char>(d[0])))
            known.insert(d);
  for (const auto &[name, size] : dims)
    if (!known.count(name)) {
      std::string list;
      for (const std::string &k : known)
        list += (list.empty() ? "" : ", ") + k;
      return usageError(
          "--dims: the model has no dimension '" + name + "'" +
          (list.empty() ? "; it has none" : "; its dimensions are " + list));
    }
  std::cout << describeModel(*model, dims, withPlan);
  if (layoutT > 0)
    std::cout << describeAttention(*model, layoutT);
  return 0;
}

int mergeCommand(const std::vector<std::string> &args) {
  std::string path, output, quantize;
  LoadOptions load;
  OptionParser p("merge");
  artifactOptions(p, path, load);
  p.text("--output", output, "a file, e.g. -o merged.safetensors");
  p.alias("-o", "--output");
  p.text("--quantize", quantize,
         "a quantization for the merged weights, e.g. --quantize=nf4");
  if (int rc = p.parse(args); rc >= 0)
    return rc;
  if (path.empty())
    return usageError("'kiln merge' needs an artifact with LoRA adapters");
  if (!llvm::StringRef(output).ends_with(".safetensors"))
    return usageError("'kiln merge' writes a .safetensors checkpoint: give "
                      "-o FILE.safetensors");
  quant::QuantSpec spec;
  std::string error;
  if (!quantize.empty() && !quant::parseQuantSpec(quantize, spec, error))
    return usageError("--quantize=" + quantize + ": " + error);
  std::unique_ptr<Model> model;
  if (int rc = loadArtifact("merge", path, model, load); rc >= 0)
    return rc;
  NamedTensors merged;
  if (Status s =
          model->mergeAdapters(merged, quantize.empty() ? nullptr : &spec);
      !s)
    return fail(path + ": " + s.message());
  if (Status s = writeSafetensors(output, merged); !s)
    return fail(s.message());
  std::cout << "merged " << model->lora()->targets.size() << " adapters (rank "
            << model->lora()->rank << ", alpha " << model->lora()->alpha
            << ") into " << output
            << (quantize.empty() ? std::string() : " as " + quantize)
            << "; compile it with --weights=" << output
            << (quantize.empty() ? std::string() : " --quantize=" + quantize)
            << "\n";
  return 0;
}

std::string describeAttention(Model &model, int64_t T) {
  std::ostringstream os;
  os << "attention layouts at T=" << T << " (blocks of "
     << attention::kKernelBlockQ << "x" << attention::kKernelBlockK
     << " queries x keys; # computed, + computed with a mask inside, . "
        "skipped)\n";
  size_t sites = 0;
  for (const FunctionInfo &f : model.functions())
    for (const AttentionSite &a : f.attention) {
      ++sites;
      attention::Layout l = attention::describeLayout(a.pattern, T, T, a.heads);
      os << "fn " << f.name << ", kernel " << a.kernel;
      if (!a.location.empty())
        os << " at " << a.location;
      os << ": " << attention::formatPattern(a.pattern)
         << (a.pattern.causal ? ", causal" : "") << ", " << a.heads
         << " heads\n";
      for (size_t h = 0; h < l.heads.size(); ++h) {
        const attention::HeadLayout &hl = l.heads[h];
        char density[32];
        std::snprintf(density, sizeof density, "%.1f%%",
                      100.0 * static_cast<double>(hl.computed) /
                          static_cast<double>(std::max<int64_t>(1, l.total())));
        os << "  "
           << (l.heads.size() == 1 ? "every head" : "head " + std::to_string(h))
           << ": " << hl.computed << " of " << l.total() << " blocks ("
           << density << "), " << hl.masked << " masked inside\n";
        std::istringstream rows(hl.text);
        for (std::string row; std::getline(rows, row);)
          os << "    " << row << "\n";
      }
    }
  if (!sites)
    os << "the model has no attention\n";
  return os.str();
}

namespace {

/// "28 KiB (28672 bytes)", "384 bytes": human units, and the exact count.
std::string humanBytes(uint64_t bytes) {
  std::string h = formatBytes(bytes);
  return bytes < 1024 ? h : h + " (" + std::to_string(bytes) + " bytes)";
}

} // namespace

std::string describeModel(Model &model,
                          const std::map<std::string, int64_t> &dims,
                          bool withPlan) {
  std::ostringstream os;
  os << "model " << model.modelName() << "\n";
  os << "hyperparameters:";
  for (const auto &[name, value] : model.hyperparameters())
    os << " " << name << "=" << value;
  os << "\n";
  int64_t total = 0, trained = 0;
  uint64_t bytes = 0;
  std::map<std::string, uint64_t> byStorage;
  for (size_t i = 0; i < model.parameters().size(); ++i) {
    const ParameterInfo &p = model.parameters()[i];
    int64_t n = 1;
    for (int64_t d : p.shape)
      n *= d;
    total += n;
    trained += p.trainable ? n : 0;
    bytes += model.storedBytes(i);
    byStorage[model.storage(i)] += model.storedBytes(i);
  }
  os << "parameters: " << model.parameters().size() << " tensors, " << total
     << " values";
  if (trained < total)
    os << " (" << trained << " trained)";
  os << "; " << humanBytes(bytes) << " stored";
  if (byStorage.size() > 1)
    for (const auto &[storage, b] : byStorage)
      os << "; " << storage << " " << formatBytes(b);
  os << "\n";
  if (const auto &cuda = model.cudaExecutable()) {
    os << "cuda: fatbin, " << humanBytes(cuda->bytes) << ", " << cuda->entries
       << " kernels for";
    for (const std::string &a : cuda->architectures)
      os << " " << a;
    os << (cuda->only ? "; runs on the GPU only (--target=cuda)\n"
                      : "; runs on the CPU or the GPU (--target=cpu,cuda)\n");
  }
  if (const auto &lora = model.lora())
    os << "lora: rank " << lora->rank << ", alpha " << lora->alpha << ", "
       << lora->targets.size() << " adapted weights\n";
  if (const Tokenizer &tok = model.tokenizer(); !tok.empty()) {
    os << "tokenizer: " << tok.kind() << ", " << tok.size() << " tokens";
    if (tok.bos() >= 0)
      os << " (BOS " << tok.bos() << ", EOS " << tok.eos() << ")";
    os << "\n";
  }
  if (!model.history().empty()) {
    os << "history:\n";
    for (const std::string &line : model.history())
      os << "  " << line << "\n";
  }
  std::string dimsText;
  for (const auto &[name, size] : dims)
    dimsText +=
        (dimsText.empty() ? "" : ",") + name + "=" + std::to_string(size);
  for (const FunctionInfo &f : model.functions()) {
    os << "fn " << f.name << "(";
    for (size_t i = 0; i < f.inputs.size(); ++i)
      os << (i ? ", " : "") << signature(f.inputs[i]);
    os << ") -> (";
    for (size_t i = 0; i < f.outputs.size(); ++i) {
      ArgInfo o = f.outputs[i];
      o.name = "";
      os << (i ? ", " : "") << signature(o).substr(2);
    }
    os << ")\n  " << f.kernels << " kernels, " << f.values << " values\n";
    if (!dims.empty()) {
      MemoryReport r;
      if (Status s = model.memoryReport(f.name, dims, r); !s) {
        os << "  memory: " << s.message() << "\n";
      } else {
        os << "  memory at " << dimsText << ": arena "
           << humanBytes(r.arenaBytes) << "; all intermediates without reuse "
           << humanBytes(r.intermediateBytes) << "\n";
      }
    }
    if (withPlan)
      for (const std::string &line : f.plan)
        os << "    " << line << "\n";
  }
  return os.str();
}

} // namespace kiln::tools

namespace kiln::tools {

int generateCommand(const std::vector<std::string> &args) {
  std::string path;
  int64_t maxTokens = -1;
  uint64_t seed = 0;
  int threads = 0;
  double temperature = 1.0, topP = 1.0, penalty = 1.0;
  int64_t topK = 0;
  std::vector<int32_t> prompt;
  std::vector<std::string> stops;
  bool havePrompt = false, printIds = false, recompute = false;
  std::optional<std::string> promptText;
  LoadOptions load;
  OptionParser p("generate");
  artifactOptions(p, path, load);
  deviceOption(p, load);
  p.integer("--threads", threads, limits::kThreads);
  p.integer("--max-tokens", maxTokens, limits::kRepeat);
  p.custom("--prompt-ids", [&](llvm::StringRef v) {
    if (v.empty())
      return usageError("--prompt-ids is empty");
    havePrompt = true;
    prompt.clear();
    llvm::SmallVector<llvm::StringRef> items;
    v.split(items, ',');
    for (llvm::StringRef item : items) {
      int64_t id;
      if (item.getAsInteger(10, id) || id < 0 || id > INT32_MAX)
        return usageError("--prompt-ids expects token ids like 1,2,3, got '" +
                          v.take_front(60) + "'");
      prompt.push_back(static_cast<int32_t>(id));
    }
    return 0;
  });
  p.custom("--prompt", [&](llvm::StringRef v) {
    if (v.empty())
      return usageError("--prompt is empty");
    promptText = v.str();
    return 0;
  });
  p.flag("--ids", printIds);
  p.real("--temperature", temperature, 0, INFINITY);
  p.real("--top-p", topP, 0, 1, /*minOpen=*/true);
  p.integer("--top-k", topK, {0, INT32_MAX});
  p.real("--repetition-penalty", penalty, 0, 1e6, /*minOpen=*/true);
  p.custom("--stop", [&](llvm::StringRef v) {
    if (v.empty())
      return usageError("--stop is empty");
    stops.push_back(v.str());
    return 0;
  });
  p.flag("--recompute", recompute);
  p.seed("--seed", seed);
  ProfileOption profile;
  profile.declare(p);
  if (int rc = p.parse(args); rc >= 0)
    return rc;
  if (temperature == 0)
    p.unused({"--top-k", "--top-p", "--seed"},
             "with --temperature=0 (greedy decoding does not sample)");
  if (path.empty())
    return usageError("'kiln generate' needs an artifact");
  if (maxTokens < 0)
    return usageError("'kiln generate' needs --max-tokens=N");
  if (promptText && havePrompt)
    return usageError("give --prompt or --prompt-ids, not both");
  std::unique_ptr<Model> model;
  if (int rc = loadArtifact("generate", path, model, load); rc >= 0)
    return rc;
  model->setThreads(threads);
  profile.attach(*model);
  // Artifacts with a tokenizer (from kiln train, or compiled with
  // --tokenizer) take a text prompt and print text.
  const Tokenizer &tok = model->tokenizer();
  if (promptText) {
    if (tok.empty())
      return fail(path + ": the artifact has no tokenizer; give token ids "
                         "with --prompt-ids, or compile it with "
                         "--tokenizer=FILE");
    if (Status s = tok.encode(*promptText, prompt); !s)
      return fail("--prompt: " + s.message());
    havePrompt = true;
  }
  // An encoder-decoder's prompt is its source (what to translate or
  // summarize), which as text ends with EOS as T5 was trained (Hugging
  // Face's tokenizer appends it too); its output is new text, printed
  // alone.
  bool encoderDecoder = isEncoderDecoder(*model);
  if (promptText && encoderDecoder && tok.eos() >= 0)
    prompt.push_back(tok.eos());
  if (!havePrompt && encoderDecoder)
    return usageError(path + " is an encoder-decoder: give its source with "
                             "--prompt or --prompt-ids");
  if (!havePrompt) {
    if (tok.empty()) {
      prompt = {1}; // BOS, as llama2.c checkpoints expect
    } else if (tok.bos() >= 0) {
      prompt = {tok.bos()};
    } else { // start from a newline when the vocabulary has one
      prompt = {0};
      for (size_t i = 0; i < tok.size(); ++i)
        if (tok.pieces()[i] == "\n")
          prompt = {static_cast<int32_t>(i)};
    }
  }
  if (!stops.empty() && tok.empty())
    return fail(path + ": --stop needs text: the artifact has no tokenizer");
  GenerateOptions g;
  g.maxTokens = maxTokens;
  g.temperature = temperature;
  g.topK = topK;
  g.topP = topP;
  g.repetitionPenalty = penalty;
  g.seed = static_cast<uint64_t>(seed);
  g.stopTokens = stopTokens(tok);
  g.recompute = recompute;
  // Text streams as each token is chosen (held back only while it may be
  // the start of a --stop string); ids print on one line at the end.
  bool text = !tok.empty() && !printIds;
  int32_t prev = -1;
  if (text && !encoderDecoder) {
    for (int32_t id : prompt) {
      std::cout << tok.decode(prev, id);
      prev = id;
    }
    std::cout << std::flush;
  }
  StopMatcher stop(stops);
  std::vector<std::vector<int32_t>> generated;
  GenerateStats stats;
  Status s = generate(
      *model, {prompt}, g, generated,
      [&](size_t, int32_t next) {
        std::string piece = tok.empty() ? "" : tok.decode(prev, next);
        prev = next;
        std::string shown = stop.feed(piece);
        if (text)
          std::cout << shown << std::flush;
        return !stop.stopped();
      },
      &stats);
  if (text)
    std::cout << stop.flush();
  if (!s) {
    if (text)
      std::cout << "\n";
    return fail(s.message());
  }
  if (!text) {
    std::string line;
    std::vector<int32_t> none;
    for (const std::vector<int32_t> *ids :
         {encoderDecoder ? &none : &prompt, &generated[0]})
      for (int32_t id : *ids)
        line += (line.empty() ? "" : " ") + std::to_string(id);
    std::cout << line;
  }
  std::cout << "\n" << std::flush;
  auto rate = [](int64_t n, double s) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", s > 0 ? n / s : 0.0);
    return std::string(buf);
  };
  // The first step runs the prompt and picks the first token; the rest
  // are decoding steps.
  int64_t steps = std::max<int64_t>(stats.generatedTokens - 1, 0);
  std::cerr << "kiln: prompt " << stats.promptTokens << " tokens, generated "
            << stats.generatedTokens << "; prefill "
            << rate(stats.promptTokens, stats.prefillSeconds)
            << " tokens/s, decode " << rate(steps, stats.decodeSeconds)
            << " tokens/s ("
            << (stats.cached ? "key/value cache" : "recomputing each token")
            << ")\n";
  return profile.write();
}

int tokenizeCommand(const std::vector<std::string> &args) {
  std::string path, input;
  bool decode = false;
  OptionParser p("tokenize");
  p.text("--tokenizer", path,
         "tokenizer files or an artifact that carries a tokenizer, "
         "e.g. --tokenizer=tok512.bin");
  p.flag("--decode", decode);
  p.positional(input, "text");
  if (int rc = p.parse(args); rc >= 0)
    return rc;
  if (path.empty())
    return usageError("'kiln tokenize' needs --tokenizer=PATH (tokenizer "
                      "files or a .kart artifact with a tokenizer)");
  if (input.empty())
    return usageError("'kiln tokenize' needs the text (or ids with "
                      "--decode), or - to read standard input");
  // The tokenizer: an artifact's, or tokenizer files.
  Tokenizer own;
  std::unique_ptr<Model> model;
  const Tokenizer *tok = &own;
  if (llvm::StringRef(path).ends_with(".kart")) {
    if (Status s = Model::load(path, model); !s)
      return fail(s.message());
    tok = &model->tokenizer();
    if (tok->empty())
      return fail(path + ": the artifact has no tokenizer");
  } else if (Status s = Tokenizer::load(path, own); !s) {
    return fail(s.message());
  }
  std::string text = input;
  if (input == "-") {
    std::ostringstream all;
    all << std::cin.rdbuf();
    text = all.str();
  }
  if (!decode) {
    std::vector<int32_t> ids;
    if (Status s = tok->encode(text, ids); !s)
      return fail(s.message());
    std::string line;
    for (int32_t id : ids)
      line += (line.empty() ? "" : " ") + std::to_string(id);
    std::cout << line << "\n";
    return 0;
  }
  // Ids separated by spaces, commas or newlines.
  std::vector<int32_t> ids;
  llvm::SmallVector<llvm::StringRef> items;
  llvm::StringRef(text).split(items, ' ', -1, /*KeepEmpty=*/false);
  for (llvm::StringRef group : items) {
    llvm::SmallVector<llvm::StringRef> parts;
    group.split(parts, ',', -1, /*KeepEmpty=*/false);
    for (llvm::StringRef item : parts) {
      item = item.trim();
      if (item.empty())
        continue;
      int64_t id;
      if (item.getAsInteger(10, id) || id < 0 ||
          id >= static_cast<int64_t>(tok->size()))
        return fail("--decode: '" + item.take_front(40).str() +
                    "' is not a token id of this tokenizer (0 to " +
                    std::to_string(tok->size() - 1) + ")");
      ids.push_back(static_cast<int32_t>(id));
    }
  }
  std::cout << tok->decode(ids) << "\n";
  return 0;
}

} // namespace kiln::tools
