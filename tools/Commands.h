//===- Commands.h - subcommands of the kiln CLI -----------------*- C++ -*-===//
#ifndef KILN_TOOLS_COMMANDS_H
#define KILN_TOOLS_COMMANDS_H

#include "codegen/KartWriter.h"
#include "frontend/MLIRGen.h"
#include "passes/Passes.h"
#include "runtime/Model.h"
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

int compileCommand(const std::vector<std::string> &args);
int runCommand(const std::vector<std::string> &args);
int inspectCommand(const std::vector<std::string> &args);
int generateCommand(const std::vector<std::string> &args);
int trainCommand(const std::vector<std::string> &args);

/// Compiles a .kiln file (with hyperparameter overrides, and `gradOf`'s
/// gradient function when it is not empty, recomputing block activations
/// with `recompute`, and a compiled `train_step` with `trainStep`) into
/// artifact bytes, running the fusion passes unless `fuse` is false.
/// Diagnostics
/// go to stderr; returns the exit status (0 on success).
int compileToArtifact(const std::string &input,
                      const std::vector<Define> &defines,
                      const std::string &gradOf, bool recompute, bool fuse,
                      const ArtifactOptions &artifact,
                      std::vector<uint8_t> &bytes,
                      const TrainStepOptions *trainStep = nullptr);

} // namespace kiln::tools

#endif
