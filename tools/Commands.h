//===- Commands.h - subcommands of the kiln CLI -----------------*- C++ -*-===//
#ifndef KILN_TOOLS_COMMANDS_H
#define KILN_TOOLS_COMMANDS_H

#include "codegen/KartWriter.h"
#include "driver/Compile.h"
#include "frontend/MLIRGen.h"
#include "passes/Passes.h"
#include "runtime/Model.h"
#include "runtime/Trainer.h"
#include "llvm/ADT/Twine.h"

#include <map>
#include <string>
#include <vector>

namespace kiln::tools {

/// `kiln COMMAND --help` for one command ("compile", "run", ...); for "",
/// `kiln --help`: the overview and every command's options; "" for an
/// unknown command.
std::string helpText(llvm::StringRef command);

/// Prints `kiln: error: msg` and a pointer to --help; returns exit status 2.
int usageError(const llvm::Twine &msg);

/// The text of `kiln inspect`: functions, signatures, parameters and the
/// memory plan; with `dims`, the arena size next to the sum of intermediates;
/// with `withPlan`, every kernel.
std::string describeModel(runtime::Model &model,
                          const std::map<std::string, int64_t> &dims,
                          bool withPlan);

class OptionParser;

/// --attention, --attention-functions and --attention-blocks, as kiln
/// compile and kiln train read them.
struct AttentionOptions {
  std::string pattern, functions, blocks;
  /// Declares the options on `p`.
  void declare(OptionParser &p);
  /// Checks them and copies them into `r`; returns an exit status (a usage
  /// error naming the option) or -1.
  int apply(CompileRequest &r) const;
};

/// --quantize and --quantize-params, as kiln compile and kiln train read
/// them.
struct QuantizeOptions {
  std::string spec, params;
  void declare(OptionParser &p);
  /// Checks them and copies them into `r`; an exit status or -1.
  int apply(CompileRequest &r) const;
};

/// --lora and --adapter, as kiln compile and kiln train read them.
struct AdapterOptions {
  std::string lora, adapter;
  void declare(OptionParser &p);
  /// Checks them and copies them into `r`; an exit status or -1.
  int apply(CompileRequest &r) const;
};

/// --optimizer, --beta1, --beta2, --eps, --momentum, --weight-decay and
/// --clip: the update a compiled train_step carries, as kiln train and
/// kiln compile --train-step read them (defaults: TrainConfig's).
struct OptimizerOptions {
  runtime::TrainConfig config;
  void declare(OptionParser &p);
  /// Warns about the options the chosen optimizer ignores.
  void warnUnused(OptionParser &p) const;
  /// The compiled step of loss `function` with these settings.
  TrainStepOptions step(const std::string &function) const;
  /// Copies the settings into a trainer's configuration.
  void into(runtime::TrainConfig &train) const;
};

/// --profile=trace.json, as kiln run, generate and train read it: every
/// call of the model recorded (runtime/Profile.h) and written as a
/// Chrome/Perfetto trace at the end.
struct ProfileOption {
  std::string path;
  std::shared_ptr<runtime::Profiler> profiler;
  void declare(OptionParser &p);
  /// Attaches a profiler to `model` when --profile was given.
  void attach(runtime::Model &model);
  /// Writes the trace and says where; an exit status (0: written or not
  /// asked for).
  int write() const;
};

/// `kiln inspect --attention-layout=T`: each attention kernel's pattern and
/// the blocks its kernels compute at sequence length T, per head.
std::string describeAttention(runtime::Model &model, int64_t T);

int compileCommand(const std::vector<std::string> &args);
int runCommand(const std::vector<std::string> &args);
int inspectCommand(const std::vector<std::string> &args);
int mergeCommand(const std::vector<std::string> &args);
int generateCommand(const std::vector<std::string> &args);
int tokenizeCommand(const std::vector<std::string> &args);
/// `kiln train`; `outputPath`, when given, receives the trained
/// artifact's path (for kiln.train in Python).
int trainCommand(const std::vector<std::string> &args,
                 std::string *outputPath = nullptr);

} // namespace kiln::tools

#endif
