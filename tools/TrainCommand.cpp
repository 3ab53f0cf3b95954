//===- TrainCommand.cpp - kiln train --------------------------------------===//
//
// Trains a language model on a text file: compiles the model with its
// gradient function (or loads an artifact that has one), tokenizes the text
// by characters or bytes, runs training steps (runtime/Trainer.h), evaluates
// on a held-out tail, writes metrics, checkpoints and a loss plot, and
// finally the trained artifact.
//
//===----------------------------------------------------------------------===//
#include "driver/Compile.h"
#include "tools/Commands.h"
#include "tools/Options.h"
#include "tools/Plot.h"

#include "runtime/File.h"
#include "runtime/Json.h"
#include "runtime/Memory.h"
#include "runtime/Text.h"
#include "runtime/Tokenizer.h"
#include "runtime/Trainer.h"
#include "runtime/TrainerState.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <unistd.h>

using namespace kiln;
using namespace kiln::runtime;
using kiln::tools::AttentionOptions;
using kiln::tools::usageError;

namespace {

int fail(const std::string &msg) {
  llvm::WithColor::error(llvm::errs(), "kiln") << msg << "\n";
  return 1;
}

struct Options {
  // tokenizer: "char", "byte" or a tokenizer file or directory
  // (Tokenizer::load) as given; empty for the default (the artifact's own
  // tokenizer, else char for text and none for token files).
  std::string input, data, tokenizer, tokenDtype, checkpointDir, metrics, plot,
      output, loss = "loss";
  int64_t steps = 0, batch = 8, seq = 64, accumulate = 1, evalEvery = 0,
          evalBatches = 8, checkpointEvery = 0, logEvery = 0, threads = 0,
          keep = 2, stopAfter = 0;
  LoadOptions load;   // --weights-file, for an artifact; --device
  std::string target; // --target, for a .kiln model
  double evalFraction = 0.1;
  bool resume = false, recompute = false, fuse = true, quiet = false,
       verbose = false, dataParallel = false;
  /// Every option's resolved value (OptionParser::settingsJson), which the
  /// checkpoints record so that --resume needs nothing retyped.
  std::string settings;
  AttentionOptions attention;
  kiln::tools::QuantizeOptions quantize;
  kiln::tools::AdapterOptions adapters;
  kiln::tools::ProfileOption profile;
  std::string weights, saveAdapter;
  uint64_t seed = 0;
  TrainConfig train;
  kiln::tools::OptimizerOptions optimizer; // copied into `train`
  std::vector<Define> defines;
};

/// The tokenizer's kind, "none" for token data trained without one.
std::string tokenizerName(const Tokenizer &tok) {
  return tok.empty() ? "none" : tok.kind();
}

/// Whether --data names pre-tokenized ids rather than text.
bool isTokenData(const std::string &path) {
  return llvm::StringRef(path).ends_with(".bin");
}

/// trainer_state.json (docs/training.md): where the run is, what a resume
/// must agree with, and the run's settings.
std::string stateJson(const Options &o, const Tokenizer &tok, int64_t step,
                      uint64_t dataRng) {
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "{\n  \"format\": 1,\n  \"written_by\": \"kiln train\",\n"
                "  \"step\": %" PRId64 ",\n  \"seed\": %" PRIu64
                ",\n  \"data_rng\": \"%" PRIu64 "\",\n  \"batch\": %" PRId64
                ",\n  \"seq\": %" PRId64 ",\n  \"accumulate\": %" PRId64
                ",\n  \"tokenizer\": %s,\n  \"optimizer\": \"%s\",\n"
                "  \"dropout_seed\": %" PRIu64 ",\n  \"settings\": ",
                step, o.seed, dataRng, o.batch, o.seq, o.accumulate,
                jsonQuote(tokenizerName(tok)).c_str(),
                o.train.optimizer.c_str(), o.train.seed);
  return buf + o.settings + "\n}\n";
}

std::string duration(double seconds) {
  char buf[32];
  int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%" PRId64 "h%02" PRId64 "m", s / 3600,
                  s / 60 % 60);
  else
    std::snprintf(buf, sizeof buf, "%" PRId64 "m%02" PRId64 "s", s / 60,
                  s % 60);
  return buf;
}

/// parse() found --resume with a checkpoint directory: the checkpoint's
/// settings come first.
constexpr int kNeedsCheckpointSettings = -2;

/// Reads the command line into `o`, over the options of `resumed` (a
/// checkpoint's settings) when given; returns -1 to go on,
/// kNeedsCheckpointSettings, or the exit status.
int parse(const std::vector<std::string> &args, Options &o,
          const JsonValue *resumed = nullptr,
          const std::string &resumedFrom = "") {
  using namespace tools::limits;
  bool haveWarmup = false;
  tools::OptionParser p("train");
  p.positional(o.input, "model");
  p.configFile("--config");
  p.text("--data", o.data,
         "a text file or a .bin file of token ids, e.g. --data=text.txt");
  p.text("--tokenizer", o.tokenizer,
         "char, byte, or a tokenizer file or directory, e.g. "
         "--tokenizer=gpt2:DIR");
  p.choice("--token-dtype", o.tokenDtype, {"uint16", "uint32"});
  p.integer("--steps", o.steps, kSteps);
  p.integer("--batch", o.batch, kBatch);
  p.integer("--seq", o.seq, kSeq);
  p.integer("--accumulate", o.accumulate, kAccumulate);
  p.integer("--eval-every", o.evalEvery, {0, kSteps.max});
  p.integer("--eval-batches", o.evalBatches, {1, 1 << 20});
  p.integer("--checkpoint-every", o.checkpointEvery, {0, kSteps.max});
  p.integer("--log-every", o.logEvery, {0, kSteps.max});
  p.integer("--threads", o.threads, kThreads);
  p.integer("--keep-checkpoints", o.keep, {1, 1 << 20});
  p.integer("--stop-after", o.stopAfter, kSteps);
  p.custom(
      "--warmup",
      [&](llvm::StringRef v) {
        int64_t n;
        if (v.getAsInteger(10, n) || n < 0 || n > kSteps.max)
          return usageError("--warmup expects an integer from 0 to " +
                            std::to_string(kSteps.max) + ", got '" +
                            v.take_front(60) + "'");
        o.train.warmupSteps = n;
        haveWarmup = true;
        return 0;
      },
      [&] { return std::to_string(o.train.warmupSteps); });
  // The trainer checks these against each other (e.g. lr > 0).
  const double inf = INFINITY;
  p.real("--lr", o.train.lr, -inf, inf);
  p.real("--min-lr-ratio", o.train.minLrRatio, -inf, inf);
  o.optimizer.declare(p);
  p.real("--eval-fraction", o.evalFraction, -inf, inf);
  p.seed("--seed", o.seed);
  p.text("--checkpoint-dir", o.checkpointDir, "a directory");
  p.text("--metrics", o.metrics, "a file, e.g. --metrics=metrics.jsonl");
  p.text("--plot", o.plot, "a file, e.g. --plot=loss.svg");
  p.text("--loss", o.loss, "a function name, e.g. --loss=loss");
  p.text("--output", o.output, "a file, e.g. -o trained.kart");
  p.alias("-o", "--output");
  p.text("--weights-file", o.load.weightsFile,
         "the external weights of an artifact, e.g. "
         "--weights-file=w.safetensors");
  p.text("--device", o.load.device, "a device: cpu, cuda or cuda:N");
  p.text("--target", o.target, "devices: cpu, cuda or cpu,cuda");
  p.flag("--resume", o.resume);
  p.flag("--data-parallel", o.dataParallel);
  p.integer("--zero", o.train.zero, {0, 2});
  p.flag("--no-overlap", o.train.overlapReductions, false);
  p.flag("--quiet", o.quiet);
  p.flag("--verbose", o.verbose);
  p.flag("--recompute", o.recompute);
  p.flag("--no-fuse", o.fuse, false);
  o.attention.declare(p);
  o.quantize.declare(p);
  o.adapters.declare(p);
  o.profile.declare(p);
  p.text("--weights", o.weights,
         "a .safetensors file or llama2.c checkpoint, e.g. "
         "--weights=base.safetensors");
  p.text("--save-adapter", o.saveAdapter,
         "a directory, e.g. "
         "--save-adapter=adapter");
  p.text("--optimizer-state", o.train.optimizerStateFile,
         "a file, e.g. --optimizer-state=/scratch/moments.bin");
  p.custom(
      "--define",
      [&](llvm::StringRef def) {
        auto [name, v] = def.split('=');
        if (name.trim().empty() || v.trim().empty())
          return usageError("-D expects NAME=VALUE, got '" +
                            def.take_front(60) + "'");
        o.defines.push_back({name.trim().str(), v.trim().str(), ""});
        return 0;
      },
      [&] {
        if (o.defines.empty())
          return std::string();
        std::string json = "{";
        for (const Define &d : o.defines)
          json += (json.size() > 1 ? ", " : "") + jsonQuote(d.name) + ": " +
                  jsonQuote(d.value);
        return json + "}";
      });
  p.alias("-D", "--define");
  if (resumed)
    p.layer(*resumed, resumedFrom);
  if (int rc = p.parse(args); rc >= 0)
    return rc;
  if (o.resume && !resumed && !o.checkpointDir.empty())
    return kNeedsCheckpointSettings;
  if (o.quiet && o.verbose)
    return usageError("--quiet and --verbose contradict each other");
  if (o.input.empty())
    return usageError("'kiln train' needs a model, e.g. kiln train "
                      "examples/gpt2.kiln --data=text.txt --steps=100");
  if (o.data.empty())
    return usageError("'kiln train' needs --data=FILE (a text file, or a "
                      ".bin file of token ids)");
  if (!o.tokenDtype.empty() && !isTokenData(o.data))
    return usageError("--token-dtype applies to token files (--data=FILE.bin)");
  if (isTokenData(o.data) && (o.tokenizer == "char" || o.tokenizer == "byte"))
    return usageError("--tokenizer=" + o.tokenizer +
                      " is built from text; --data=" + o.data +
                      " holds token ids (name the tokenizer that made them, "
                      "e.g. --tokenizer=gpt2:DIR, or none)");
  if (o.steps == 0)
    return usageError("'kiln train' needs --steps=N");
  if (o.resume && o.checkpointDir.empty())
    return usageError("--resume needs --checkpoint-dir=DIR");
  if (!(o.evalFraction >= 0 && o.evalFraction < 0.9))
    return usageError("--eval-fraction must be in [0, 0.9)");
  // Options the chosen settings ignore: a warning, not silence.
  o.optimizer.warnUnused(p);
  o.optimizer.into(o.train);
  if (o.checkpointDir.empty())
    p.unused({"--checkpoint-every", "--keep-checkpoints"},
             "without --checkpoint-dir");
  if (o.evalFraction == 0)
    p.unused({"--eval-every", "--eval-batches"},
             "with --eval-fraction=0 (nothing is held out)");
  o.train.totalSteps = o.steps;
  o.train.loss = o.loss;
  o.train.seed = o.seed;
  if (!haveWarmup)
    o.train.warmupSteps = std::min<int64_t>(100, o.steps / 10);
  if (o.logEvery == 0)
    o.logEvery = std::max<int64_t>(1, o.steps / 20);
  if (o.output.empty()) {
    llvm::SmallString<128> stem(llvm::sys::path::stem(o.input));
    o.output = o.checkpointDir.empty()
                   ? (stem + "-trained.kart").str()
                   : o.checkpointDir + "/" + (stem + "-trained.kart").str();
  }
  // What this invocation alone decides stays out of the settings a resume
  // reuses.
  o.settings =
      p.settingsJson({"--resume", "--stop-after", "--threads", "--quiet",
                      "--verbose", "--profile", "--device"});
  return -1;
}

/// The settings recorded in the newest checkpoint of `dir` (an empty
/// object when there is none, or it has none); `from` names the file.
int checkpointSettings(const std::string &dir, JsonValue &settings,
                       std::string &from) {
  settings = JsonValue();
  settings.kind = JsonValue::Kind::Object;
  TrainerState state;
  bool found = false;
  if (Status s = readLatestTrainerState(dir, state, found); !s)
    return fail(s.message());
  if (!found)
    return -1; // no checkpoint yet: the run starts at step 0
  from = state.path;
  if (const JsonValue *v = state.json.get("settings"))
    settings = *v;
  return -1;
}

/// The tokenizer --tokenizer asks for: char or byte built from the text,
/// one read from files, or (token data without --tokenizer) none.
int makeTokenizer(const Options &o, const std::string &text, Tokenizer &tok,
                  std::string &source) {
  bool builtFromText =
      o.tokenizer.empty() || o.tokenizer == "char" || o.tokenizer == "byte";
  if (builtFromText && isTokenData(o.data))
    return 0;
  if (builtFromText) {
    std::string kind = o.tokenizer.empty() ? "char" : o.tokenizer;
    if (Status s = Tokenizer::fromText(kind, text, tok); !s)
      return fail(o.data + ": " + s.message());
    source = "the " + kind + " tokenizer of " + o.data;
    return 0;
  }
  if (Status s = Tokenizer::load(o.tokenizer, tok); !s)
    return fail(s.message());
  source = "the " + tok.kind() + " tokenizer " + o.tokenizer;
  return 0;
}

/// Empty if --seq fits the model's learned positions (n_positions or
/// max_position_embeddings), else the message that says by how much.
std::string
seqFits(const Options &o,
        const std::vector<std::pair<std::string, double>> &hyperparameters) {
  for (const auto &[name, value] : hyperparameters)
    if ((name == "n_positions" || name == "max_position_embeddings") &&
        o.seq > static_cast<int64_t>(value)) {
      int64_t n = static_cast<int64_t>(value);
      return "--seq=" + std::to_string(o.seq) + " is longer than the " +
             std::to_string(n) + " positions the model has (" + name + "=" +
             std::to_string(n) + "); use --seq=" + std::to_string(n) +
             " or less" +
             (llvm::StringRef(o.input).ends_with(".kart")
                  ? std::string()
                  : ", or -D " + name + "=" + std::to_string(o.seq));
    }
  return "";
}

/// Loads or compiles the model; binds vocab_size to the tokenizer. The
/// model carries its tokenizer, so the trained artifact generates text.
int loadModel(Options &o, const std::string &text, Tokenizer &tok,
              std::unique_ptr<Model> &model) {
  bool kart = llvm::StringRef(o.input).ends_with(".kart");
  std::string source;
  if (kart) {
    if (!o.defines.empty() || o.recompute || !o.fuse ||
        !o.attention.pattern.empty() || !o.quantize.spec.empty() ||
        !o.adapters.lora.empty() || !o.adapters.adapter.empty() ||
        !o.weights.empty() || !o.target.empty())
      return usageError(
          "-D, --recompute, --no-fuse, --attention, --quantize, --lora, "
          "--adapter, --weights and --target apply to .kiln models; an "
          "artifact is already compiled");
    if (Status s = Model::load(o.input, model, o.load); !s)
      return fail(o.input + ": " + s.message());
    if (std::string m = seqFits(o, model->hyperparameters()); !m.empty())
      return usageError(m);
    if (!model->tokenizer().empty()) {
      tok = model->tokenizer();
      Tokenizer asked;
      if (!o.tokenizer.empty())
        if (int rc = makeTokenizer(o, text, asked, source))
          return rc;
      if (!o.tokenizer.empty() && asked.kind() != tok.kind())
        return fail(o.input + ": the artifact has a " + tok.kind() +
                    " tokenizer, not --tokenizer=" + o.tokenizer +
                    "; leave --tokenizer out to train with it");
      return 0;
    }
    if (int rc = makeTokenizer(o, text, tok, source))
      return rc;
    if (!tok.empty())
      if (Status s = model->setTokenizer(tok); !s)
        return fail(source + ": " + s.message());
    return 0;
  }
  if (int rc = makeTokenizer(o, text, tok, source))
    return rc;
  bool given = tok.empty();
  for (const Define &d : o.defines)
    if (d.name == "vocab_size" && !tok.empty()) {
      given = true;
      int64_t v;
      if (!llvm::StringRef(d.value).getAsInteger(10, v) &&
          v < static_cast<int64_t>(tok.size()))
        return fail(source + " has " + std::to_string(tok.size()) +
                    " tokens, more than -D vocab_size=" + d.value);
    }
  if (!given)
    o.defines.push_back(
        {"vocab_size", std::to_string(tok.size()),
         source + " (vocab_size=" + std::to_string(tok.size()) + ")"});
  CompileRequest r;
  r.path = o.input;
  r.defines = o.defines;
  r.seed = o.seed;
  if (!tok.empty()) {
    r.tokenizer = &tok;
    r.tokenizerSource = source;
  }
  r.grad = o.loss;
  r.recompute = o.recompute;
  r.fuse = o.fuse;
  // Before the passes: a long compile should not end in this.
  r.checkHyperparameters = [&o](const auto &hyperparameters) {
    return seqFits(o, hyperparameters);
  };
  if (int rc = o.attention.apply(r); rc >= 0)
    return rc;
  if (int rc = o.quantize.apply(r); rc >= 0)
    return rc;
  if (int rc = o.adapters.apply(r); rc >= 0)
    return rc;
  r.weights = o.weights;
  // The training step is compiled too: forward, backward and the optimizer
  // update in one function (used for steps without accumulation).
  o.train.compiledStep = true;
  r.trainStep = o.optimizer.step(o.loss);
  // On a GPU the model needs its CUDA kernels too; a device that is not
  // there is reported before nvcc spends minutes on them.
  {
    std::shared_ptr<cuda::Driver> driver;
    if (Status s = openLoadDevice(o.load, driver); !s)
      return fail(s.message());
  }
  r.target = !o.target.empty()                                    ? o.target
             : llvm::StringRef(o.load.device).starts_with("cuda") ? "cpu,cuda"
                                                                  : "cpu";
  CompileResult compiled;
  const std::shared_ptr<Communicator> &comm = o.train.communicator;
  if (comm && comm->size() > 1) {
    // Data parallel: rank 0 compiles, and its artifact — the program and
    // the initial weights — goes to the other ranks, which compile nothing
    // (nor read --weights).
    uint64_t bytes = 0;
    if (comm->rank() == 0 && compile(r, compiled))
      bytes = compiled.artifact.size();
    if (Status s = comm->broadcast(&bytes, sizeof bytes, 0); !s)
      return fail("data-parallel training: " + s.message());
    if (!bytes) // rank 0 said why
      return comm->rank() == 0 ? 1
                               : fail("rank 0 could not compile " + o.input);
    if (comm->rank() != 0) {
      if (uint64_t memory = physicalMemory(); memory && bytes > memory)
        return fail("rank 0's artifact is " + formatBytes(bytes) +
                    ", more than this machine's memory");
      compiled.artifact.resize(bytes);
    }
    if (Status s = comm->broadcast(compiled.artifact.data(), bytes, 0); !s)
      return fail("data-parallel training: " + s.message());
  } else if (!compile(r, compiled)) {
    return 1;
  }
  llvm::SmallString<256> dir(o.input);
  llvm::sys::path::remove_filename(dir);
  if (Status s = Model::fromBytes(std::move(compiled.artifact), model,
                                  dir.empty() ? "." : dir.str().str(), o.load);
      !s)
    return fail("the compiled model does not load: " + s.message());
  return 0;
}

/// Token ids from a file must index the model's vocabulary (vocab_size,
/// else the tokenizer's size); the largest is checked, named by offset.
int checkTokenIds(const Options &o, const Model &model, const Tokenizer &tok,
                  const TokenFileInfo &info) {
  int64_t vocab = tok.empty() ? -1 : static_cast<int64_t>(tok.size());
  std::string what = "the tokenizer's " + std::to_string(vocab) + " tokens";
  for (const auto &[name, value] : model.hyperparameters())
    if (name == "vocab_size") {
      vocab = static_cast<int64_t>(value);
      what =
          "the model's vocabulary (vocab_size=" + std::to_string(vocab) + ")";
    }
  if (vocab < 0 || info.maxId < vocab)
    return 0;
  return fail(
      o.data + ": id " + std::to_string(info.maxId) + " at byte offset " +
      std::to_string(info.headerBytes + info.maxIdIndex * info.idBytes) +
      " is outside " + what +
      (info.idBytes == 2 && o.tokenDtype.empty()
           ? " (ids were read as uint16; --token-dtype=uint32 for "
             "32-bit ids)"
           : ""));
}

/// Rows [from, from + rows) of a [B, T] batch of token ids, in place.
void keepRows(Tensor &t, int64_t from, int64_t rows) {
  int64_t T = t.shape()[1];
  Tensor part(t.dtype(), {rows, T});
  std::memcpy(part.data(), t.as<int32_t>() + from * T,
              static_cast<size_t>(rows * T) * sizeof(int32_t));
  t = std::move(part);
}

/// kiln train, with `comm` set when it runs data parallel.
int train(const std::vector<std::string> &args, std::string *outputPath,
          std::shared_ptr<Communicator> &comm) {
  Options o;
  int rc = parse(args, o);
  if (rc == kNeedsCheckpointSettings) {
    // Again, over the settings the checkpoint recorded: a resume needs
    // only --resume and the checkpoint directory.
    JsonValue settings;
    std::string from;
    if (int rc = checkpointSettings(o.checkpointDir, settings, from); rc >= 0)
      return rc;
    o = Options();
    rc = parse(args, o, &settings, from);
  }
  if (rc >= 0)
    return rc;
  // Data parallel under an MPI launcher, or when asked (docs/distributed.md):
  // --batch stays the global batch, rank r takes its r-th slice of every
  // micro-batch, and rank 0 alone reports and writes.
  if (o.dataParallel || launchedByMpi())
    if (Status s = openMpi(comm); !s)
      return fail("data-parallel training: " + s.message());
  const int64_t ranks = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  if (o.dataParallel && ranks == 1)
    llvm::WithColor::warning(llvm::errs(), "kiln")
        << "--data-parallel with one rank: this process trains alone (start "
           "the ranks with mpirun -np N kiln train ...)\n";
  if (o.train.zero > 0 && ranks == 1)
    llvm::WithColor::warning(llvm::errs(), "kiln")
        << "--zero=" << o.train.zero
        << " with one rank: there is nothing to shard the optimizer state "
           "over (it takes effect under mpirun -np N)\n";
  if (ranks > 1) {
    if (o.batch % ranks)
      return usageError("--batch=" + std::to_string(o.batch) +
                        " is the global batch; it must split evenly over the " +
                        std::to_string(ranks) + " ranks");
    o.train.communicator = comm;
    // The ranks on one machine share its cores.
    if (o.threads == 0)
      o.threads = std::max<int64_t>(1, numThreads() / comm->localSize());
    if (rank != 0) {
      o.quiet = true;
      o.verbose = false;
      o.metrics.clear();
      o.plot.clear();
      o.profile = tools::ProfileOption();
    }
  }
  // Text or token ids, bounded by this machine's memory before reading.
  std::string text;
  std::vector<int32_t> ids;
  TokenFileInfo tokenFile;
  uint64_t budget = trainingDataLimit();
  if (isTokenData(o.data)) {
    TokenWidth width = o.tokenDtype == "uint16"   ? TokenWidth::U16
                       : o.tokenDtype == "uint32" ? TokenWidth::U32
                                                  : TokenWidth::Auto;
    if (Status s = readTokenFile(o.data, width, budget, ids, tokenFile); !s)
      return fail(s.message());
  } else if (Status s = readFile(o.data, text, budget, "text file"); !s) {
    return fail(s.message());
  }
  Tokenizer tok;
  std::unique_ptr<Model> model;
  if (int rc = loadModel(o, text, tok, model))
    return rc;
  model->setThreads(static_cast<int>(o.threads));
  o.profile.attach(*model);
  if (!o.saveAdapter.empty() && !model->lora())
    return usageError("--save-adapter writes LoRA adapters; the model has "
                      "none (train with --lora=rank=8,...)");

  // The loss must be loss(tokens, targets) over [B, T] token ids.
  const FunctionInfo *lossFn = nullptr;
  for (const FunctionInfo &f : model->functions())
    if (f.name == o.loss)
      lossFn = &f;
  if (!lossFn)
    return fail("the model has no function '" + o.loss + "'");
  if (lossFn->inputs.size() != 2 || lossFn->inputs[0].dtype != DType::I32 ||
      lossFn->inputs[1].dtype != DType::I32 ||
      lossFn->inputs[0].dims.size() != 2 || lossFn->inputs[1].dims.size() != 2)
    return fail("'kiln train' trains language models: '" + o.loss +
                "' must take token ids and next-token targets, both "
                "i32[B, T]");
  const std::string tokensName = lossFn->inputs[0].name,
                    targetsName = lossFn->inputs[1].name;

  if (!isTokenData(o.data)) {
    if (Status s = tok.encode(text, ids); !s)
      return fail(o.data + ": " + s.message());
  } else if (int rc = checkTokenIds(o, *model, tok, tokenFile)) {
    return rc;
  }
  TextData data;
  if (Status s = TextData::create(std::move(ids), o.evalFraction, o.seq, data);
      !s)
    return fail(o.data + ": " + s.message());

  std::unique_ptr<Trainer> trainer;
  if (Status s = Trainer::create(*model, o.train, trainer); !s)
    return fail(o.input + ": " + s.message());
  {
    // The plan says what a step takes; refuse now what cannot fit.
    std::map<std::string, int64_t> dims;
    const std::vector<std::string> &d = lossFn->inputs[0].dims;
    for (size_t i = 0; i < 2; ++i)
      if (!d[i].empty() && !std::isdigit(static_cast<unsigned char>(d[i][0])))
        dims[d[i]] = i == 0 ? o.batch / ranks : o.seq;
    if (Status s = trainer->checkMemory(dims, o.accumulate); !s)
      return fail("--batch=" + std::to_string(o.batch) +
                  " --seq=" + std::to_string(o.seq) + ": " + s.message());
  }

  // What the run says as it goes; --quiet leaves warnings and errors.
  llvm::raw_ostream &info = o.quiet ? llvm::nulls() : llvm::errs();
  SplitMix64 dataRng{dataRngState(o.seed)};
  int64_t start = 0;
  if (o.resume) {
    TrainerState state;
    bool found = false;
    if (Status s = readLatestTrainerState(o.checkpointDir, state, found); !s)
      return fail(s.message());
    if (!found) {
      info << "kiln train: no checkpoint in " << o.checkpointDir
           << "; starting from step 0\n";
    } else {
      const std::string &dir = state.dir;
      const std::string &statePath = state.path;
      auto field = [&](const char *key) { return state.field(key); };
      int64_t step = state.step;
      uint64_t rng = state.dataRng;
      auto refuse = [&](const char *key, const std::string &want) {
        return fail(statePath + ": the checkpoint was made with " + key + "=" +
                    field(key).value_or("?") + ", this run has " + key + "=" +
                    want + "; leave --" + key +
                    " out to resume with the checkpoint's");
      };
      for (auto [key, want] : {std::pair<const char *, std::string>{
                                   "seed", std::to_string(o.seed)},
                               {"seq", std::to_string(o.seq)},
                               {"tokenizer", tokenizerName(tok)},
                               {"optimizer", o.train.optimizer}})
        if (field(key) != want)
          return refuse(key, want);
      // The data order depends on the rows a step draws, not on how they
      // split into micro-batches: a resume may split them otherwise (as a
      // different number of data-parallel ranks does).
      int64_t batch = 0, accumulate = 0;
      auto batchText = field("batch"), accumulateText = field("accumulate");
      if (!batchText || !accumulateText || !parseDecimal(*batchText, batch) ||
          !parseDecimal(*accumulateText, accumulate) || batch <= 0 ||
          accumulate <= 0 || batch > (int64_t(1) << 40) / accumulate ||
          batch * accumulate != o.batch * o.accumulate)
        return batchText == std::to_string(o.batch)
                   ? refuse("accumulate", std::to_string(o.accumulate))
                   : refuse("batch", std::to_string(o.batch));
      if (Status s = trainer->loadCheckpoint(dir); !s)
        return fail(s.message());
      if (trainer->stepCount() != step)
        return fail(dir + ": the optimizer state is at step " +
                    std::to_string(trainer->stepCount()) +
                    " but trainer_state.json says " + std::to_string(step));
      if (step >= o.steps) {
        info << "kiln train: the checkpoint " << dir << " is at step " << step
             << " and --steps=" << o.steps
             << " asks for no more; nothing to do (raise --steps to "
                "train further)\n";
        return 0;
      }
      start = step;
      dataRng.state = rng;
      info << "kiln train: resumed from " << dir << " at step " << start
           << "\n";
    }
  }

  // Output folders are created as needed (metrics inside the checkpoint
  // directory, say).
  for (const std::string &path : {o.metrics, o.plot, o.output}) {
    llvm::SmallString<256> dir(path);
    llvm::sys::path::remove_filename(dir);
    if (!path.empty() && !dir.empty())
      if (std::error_code ec = llvm::sys::fs::create_directories(dir))
        return fail(dir.str().str() +
                    ": cannot create the directory: " + ec.message());
  }
  std::ofstream metrics;
  if (!o.metrics.empty()) {
    metrics.open(o.metrics, start > 0 ? std::ios::app : std::ios::trunc);
    if (!metrics)
      return fail(o.metrics + ": cannot write the metrics file");
  }
  bool tty = isatty(2) && !o.verbose;
  size_t params = 0, trainable = 0;
  for (const ParameterInfo &p : model->parameters()) {
    size_t n = 1;
    for (int64_t d : p.shape)
      n *= static_cast<size_t>(d);
    params += n;
    trainable += p.trainable ? n : 0;
  }
  info << "kiln train: " << model->modelName() << ", " << params
       << " parameters"
       << (trainable < params ? " (" + std::to_string(trainable) + " trained)"
                              : std::string())
       << ", "
       << (tok.empty() ? std::string("no tokenizer")
                       : tok.kind() + " tokenizer (" +
                             std::to_string(tok.size()) + " tokens)")
       << (isTokenData(o.data) ? ", " + tokenFile.format : "") << "; "
       << data.trainTokens() << " training and " << data.evalTokens()
       << " held-out tokens; " << o.steps << " steps of " << o.batch << "x"
       << o.seq
       << (o.accumulate > 1
               ? " x " + std::to_string(o.accumulate) + " micro-batches"
               : std::string())
       << ", " << o.train.optimizer << " lr " << llvm::format("%g", o.train.lr)
       << ", " << (o.threads ? o.threads : numThreads()) << " threads"
       << (ranks > 1 ? " per rank; data parallel on " + comm->describe()
                     : std::string())
       << (ranks > 1 && o.train.zero > 0
               ? ", ZeRO-" + std::to_string(o.train.zero) + " (" +
                     formatBytes(trainer->optimizerStateBytes()) +
                     " of optimizer state on this rank)"
               : std::string())
       << "\n";
  if (o.verbose)
    info << "kiln train: settings " << o.settings << "\n";

  auto evaluate = [&](double &loss) -> Status {
    double sum = 0;
    for (int64_t k = 0; k < o.evalBatches; ++k) {
      std::map<std::string, Tensor> batch;
      data.evalBatch(k, o.batch, o.seq, batch[tokensName], batch[targetsName]);
      double l = 0;
      if (Status s = trainer->evaluate(batch, l); !s)
        return s;
      sum += l;
    }
    loss = sum / static_cast<double>(o.evalBatches);
    return Status::ok();
  };
  auto checkpoint = [&](int64_t step) -> Status {
    return trainer->saveCheckpoint(o.checkpointDir,
                                   stateJson(o, tok, step, dataRng.state),
                                   static_cast<int>(o.keep));
  };

  tools::Series trainCurve, evalCurve;
  // Throughput over the last steps, for the progress line and the ETA: one
  // step's rate jumps with the machine's noise.
  constexpr size_t kWindow = 20;
  std::vector<double> recentMs;
  auto begin = std::chrono::steady_clock::now();
  double lastLoss = NAN, lastEval = NAN;
  for (int64_t step = start + 1; step <= o.steps; ++step) {
    auto t0 = std::chrono::steady_clock::now();
    StepStats st;
    // Micro-batches are drawn as they run, in the same order as before.
    if (Status s = trainer->step(
            o.accumulate,
            [&](int64_t, std::map<std::string, Tensor> &m) {
              // Every rank draws the global micro-batch (the data order
              // stays one process's) and keeps its own rows.
              data.trainBatch(dataRng, o.batch, o.seq, m[tokensName],
                              m[targetsName]);
              if (ranks > 1)
                for (const std::string *n : {&tokensName, &targetsName})
                  keepRows(m[*n], rank * (o.batch / ranks), o.batch / ranks);
              return Status::ok();
            },
            st);
        !s)
      return fail(s.message());
    double ms = std::chrono::duration<double, std::milli>(
                    std::chrono::steady_clock::now() - t0)
                    .count();
    double stepTokens = static_cast<double>(o.batch * o.seq * o.accumulate);
    double tokPerS = stepTokens / (ms / 1000.0);
    if (recentMs.size() == kWindow)
      recentMs.erase(recentMs.begin());
    recentMs.push_back(ms);
    double windowMs = 0;
    for (double m : recentMs)
      windowMs += m;
    double smoothTokPerS =
        stepTokens * static_cast<double>(recentMs.size()) / (windowMs / 1000.0);
    lastLoss = st.loss;
    trainCurve.push_back({static_cast<double>(step), st.loss});
    std::optional<double> evalLoss;
    if (rank == 0 && data.evalTokens() > 0 &&
        ((o.evalEvery > 0 && step % o.evalEvery == 0) || step == o.steps)) {
      double l = 0;
      if (Status s = evaluate(l); !s)
        return fail(s.message());
      evalLoss = l;
      lastEval = l;
      evalCurve.push_back({static_cast<double>(step), l});
    }
    if (metrics.is_open()) {
      char line[512];
      int n = std::snprintf(
          line, sizeof line,
          "{\"step\": %" PRId64 ", \"loss\": %.6f, \"lr\": %.6g, "
          "\"grad_norm\": %.6g, \"tokens_per_s\": %.1f, \"step_ms\": %.2f",
          step, st.loss, st.lr, st.gradNorm, tokPerS, ms);
      metrics.write(line, n);
      if (ranks > 1) {
        // What this rank waited for the gradients' reductions, and how
        // many of them started inside a backward pass.
        n = std::snprintf(line, sizeof line,
                          ", \"allreduce_ms\": %.3f, \"reductions\": %" PRId64
                          ", \"reductions_in_backward\": %" PRId64,
                          st.allReduceSeconds * 1000.0, st.reductions,
                          st.reductionsInBackward);
        metrics.write(line, n);
      }
      if (evalLoss) {
        n = std::snprintf(line, sizeof line, ", \"eval_loss\": %.6f",
                          *evalLoss);
        metrics.write(line, n);
      }
      metrics << "}\n";
      metrics.flush();
    }
    // Training steps at the recent rate; evaluations at the rate so far.
    double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - begin)
            .count();
    double evalShare =
        std::max(0.0, elapsed - windowMs / 1000.0 /
                                    static_cast<double>(recentMs.size()) *
                                    static_cast<double>(step - start));
    double eta = (windowMs / 1000.0 / static_cast<double>(recentMs.size()) +
                  evalShare / static_cast<double>(step - start)) *
                 static_cast<double>(o.steps - step);
    char msg[256];
    std::snprintf(
        msg, sizeof msg, "loss %.4f%s lr %.2e %.0f tok/s ETA %s", st.loss,
        evalLoss ? (" eval " + std::to_string(*evalLoss).substr(0, 6)).c_str()
                 : "",
        st.lr, smoothTokPerS, duration(eta).c_str());
    if (o.quiet) {
      // Nothing: the metrics file and the last line say how it went.
    } else if (tty) {
      int width = 24;
      int filled = static_cast<int>(width * step / o.steps);
      std::string bar(filled, '=');
      if (filled < width)
        bar += '>' + std::string(width - filled - 1, ' ');
      llvm::errs() << "\rstep " << step << "/" << o.steps << " [" << bar << "] "
                   << msg << "\x1b[K";
      if (step == o.steps || evalLoss)
        llvm::errs() << "\n";
      llvm::errs().flush();
    } else if (o.verbose || step % o.logEvery == 0 || evalLoss ||
               step == o.steps) {
      llvm::errs() << "step " << step << "/" << o.steps << " " << msg << "\n";
    }
    bool stop = step == o.stopAfter;
    if (!o.checkpointDir.empty() &&
        ((o.checkpointEvery > 0 && step % o.checkpointEvery == 0) ||
         step == o.steps || stop))
      if (Status s = checkpoint(step); !s)
        return fail(s.message());
    if (stop) {
      if (tty && !o.quiet)
        llvm::errs() << "\n";
      info << "kiln train: stopped after step " << step
           << (o.checkpointDir.empty() ? std::string()
                                       : "; continue with --resume")
           << "\n";
      return o.profile.write();
    }
  }

  if (rank != 0)
    return 0; // rank 0 writes the results
  // What this run did, in the artifact's history (kiln inspect shows it).
  char what[256];
  std::snprintf(
      what, sizeof what,
      ": %" PRId64 " step%s of %" PRId64 "x%" PRId64
      "%s, %s lr %g; final loss %.4f",
      o.steps, o.steps == 1 ? "" : "s", o.batch, o.seq,
      o.accumulate > 1
          ? (" x" + std::to_string(o.accumulate) + " micro-batches").c_str()
          : "",
      o.train.optimizer.c_str(), o.train.lr, lastLoss);
  model->appendHistory(tools::commandLine("train", args) + what);
  if (Status s = model->saveArtifact(o.output); !s)
    return fail(s.message());
  if (outputPath)
    *outputPath = o.output;
  if (!o.saveAdapter.empty())
    if (Status s = model->saveAdapter(o.saveAdapter); !s)
      return fail(s.message());
  if (!o.plot.empty()) {
    std::string err;
    if (!tools::writeLossPlot(o.plot, trainCurve, evalCurve, err))
      return fail(o.plot + ": " + err);
  }
  double total =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - begin)
          .count();
  info << "kiln train: done in " << duration(total) << "; final loss "
       << llvm::format("%.4f", lastLoss);
  if (!std::isnan(lastEval))
    info << ", eval loss " << llvm::format("%.4f", lastEval);
  info << "; wrote " << o.output;
  if (!o.saveAdapter.empty())
    info << ", the adapter in " << o.saveAdapter;
  if (!o.plot.empty())
    info << " and " << o.plot;
  info << "\n";
  return o.profile.write();
}

} // namespace

int kiln::tools::trainCommand(const std::vector<std::string> &args,
                              std::string *outputPath) {
  std::shared_ptr<Communicator> comm;
  int rc = train(args, outputPath, comm);
  // A rank that failed ends the run on every rank: the others may be
  // waiting in a collective for it and would never return.
  if (rc != 0 && comm && comm->size() > 1) {
    llvm::errs().flush();
    comm->abort(rc);
  }
  return rc;
}
