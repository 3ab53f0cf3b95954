//===- Options.h - one option parser for every kiln command -----*- C++ -*-===//
//
// Each command declares its options in a table (name, kind, range, where the
// value goes) and one parser reads them, so every command accepts the same
// spellings (`--name=VALUE` or `--name VALUE`, `-o FILE`, `-D NAME=VALUE`),
// rejects the same mistakes with the same messages, and an option shared by
// several commands (--threads, --seed, --weights-file) has one limit:
//
//   OptionParser p("run");
//   p.integer("--threads", threads, limits::kThreads);
//   p.text("--function", function, "a function name, e.g. --function=loss");
//   p.positional(path, "artifact");
//   if (int rc = p.parse(args); rc >= 0) return rc;
//
//===----------------------------------------------------------------------===//
#ifndef KILN_TOOLS_OPTIONS_H
#define KILN_TOOLS_OPTIONS_H

#include "runtime/Json.h"
#include "runtime/Model.h"

#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

namespace kiln::tools {

/// An inclusive integer range.
struct IntRange {
  int64_t min, max;
};

/// The limits of options that several commands share, in one place.
namespace limits {
/// Kernel threads: more than any machine has; OpenMP fails beyond.
constexpr IntRange kThreads{1, runtime::kMaxThreads};
/// Sequences per batch (train, and the Python trainer's defaults).
constexpr IntRange kBatch{1, 65536};
/// Tokens per sequence: further bounded by the model's positions.
constexpr IntRange kSeq{1, 1 << 20};
/// Micro-batches per update; each is generated when it runs, so memory
/// does not grow with the count.
constexpr IntRange kAccumulate{1, 1 << 20};
/// Training steps and step counters (--steps, --stop-after, ...).
constexpr IntRange kSteps{1, int64_t(1) << 40};
/// Generated tokens and repeated runs.
constexpr IntRange kRepeat{1, 1000000};
} // namespace limits

/// "kiln COMMAND ARG...", as an artifact's history records the command that
/// made it: files by their names only (an artifact that travels does not
/// carry the directories of the machine that made it), the output (-o)
/// left out, each argument quoted for a POSIX shell where it needs to be.
std::string commandLine(llvm::StringRef command,
                        const std::vector<std::string> &args);

class OptionParser {
public:
  /// `command` names the command in messages and --help ("run").
  explicit OptionParser(std::string command);

  /// A switch without a value: `--plan` sets `out` to `value`.
  void flag(llvm::StringRef name, bool &out, bool value = true);
  /// An integer within `range`.
  void integer(llvm::StringRef name, int64_t &out, IntRange range);
  void integer(llvm::StringRef name, int &out, IntRange range);
  /// Any unsigned 64-bit integer (seeds).
  void seed(llvm::StringRef name, uint64_t &out);
  /// A finite number in [min, max] (or (min, max] with `minOpen`).
  void real(llvm::StringRef name, double &out, double min, double max,
            bool minOpen = false);
  /// A non-empty string; `example` completes "NAME expects ...".
  void text(llvm::StringRef name, std::string &out, llvm::StringRef example);
  /// One of `choices`.
  void choice(llvm::StringRef name, std::string &out,
              std::vector<std::string> choices);
  /// Any value, handled by `handle` (which reports its own errors and
  /// returns an exit status, 0 to go on); may be given many times. `show`,
  /// when given, writes the option's resolved value as JSON for
  /// settingsJson (empty: not set).
  void custom(llvm::StringRef name,
              std::function<int(llvm::StringRef value)> handle,
              std::function<std::string()> show = {});
  /// Arguments starting with `prefix` ("--mlir-") are collected whole into
  /// `out`, for another parser (LLVM's command line).
  void prefix(llvm::StringRef prefix, std::vector<std::string> &out);
  /// `short_` (e.g. "-o", "-D") is another spelling of `name`, which also
  /// takes its value attached ("-ofile", "-DNAME=V").
  void alias(llvm::StringRef short_, llvm::StringRef name);
  /// The one positional argument ("artifact", "model file"); "-" counts as
  /// one (standard input).
  void positional(std::string &out, llvm::StringRef what);

  /// `name` (--config) reads options from a JSON file: an object whose
  /// keys are option names without the dashes (and the positional
  /// argument's name, e.g. "model"), whose values are strings, numbers,
  /// true for a switch, a list for an option given several times and an
  /// object {"K": V} for one that takes K=V (--define). The file's options
  /// come before the command line's, which win.
  void configFile(llvm::StringRef name);
  /// Options in the same form as a config file, applied before the file
  /// and the command line (a checkpoint's settings, on resume); they do
  /// not count as given. `origin` names them in messages.
  void layer(const runtime::JsonValue &options, std::string origin);

  /// Reads `args`. Returns -1 to go on, or the exit status to end with:
  /// 0 after --help, 2 after a usage error (already printed).
  int parse(const std::vector<std::string> &args);

  /// The resolved value of every option (defaults included, except those
  /// named in `skip` and unset ones) as a JSON object in the config file's
  /// form, indented by `indent` spaces; read back by configFile and layer.
  std::string settingsJson(std::initializer_list<llvm::StringRef> skip,
                           int indent = 2) const;

  /// Whether the command line gave option `name` (after parse).
  bool given(llvm::StringRef name) const;
  /// Warns that the options in `names` that were given have no effect,
  /// because of `why` ("with --optimizer=adamw").
  void unused(std::initializer_list<llvm::StringRef> names,
              llvm::StringRef why) const;

private:
  struct Option {
    std::string name;
    bool takesValue = true;
    std::function<int(llvm::StringRef)> handle;
    std::function<std::string()> show; // JSON of the value; empty: unset
  };
  /// Options from a JSON object (a config file or a layer).
  struct Layer {
    runtime::JsonValue options;
    std::string origin; // the file, for messages
    std::string text;   // its text, for line:col; empty: byte offsets
    bool counts = true; // whether its options count as given
  };
  const Option *find(llvm::StringRef name) const;
  /// Applies a layer's options; an exit status or -1.
  int apply(const Layer &layer);
  /// "FILE:LINE:COL" of byte `offset` in a layer.
  static std::string where(const Layer &layer, size_t offset);
  /// The option spelled most like `typed`, if it is close enough to be a
  /// typo of it; empty otherwise.
  std::string nearest(llvm::StringRef typed) const;
  /// Prints the command's --help; 70 if it misses one of the options.
  int help() const;

  std::string command_;
  std::vector<Option> options_;
  std::vector<std::pair<std::string, std::string>> aliases_;
  std::vector<std::pair<std::string, std::vector<std::string> *>> prefixes_;
  std::vector<std::string> given_;
  std::string *positional_ = nullptr;
  std::string what_;
  bool positionalFromLayer_ = false; // the command line may replace it
  std::string config_;               // the config file option, if any
  std::vector<Layer> layers_;
};

} // namespace kiln::tools

#endif
