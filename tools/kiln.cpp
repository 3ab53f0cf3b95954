//===- kiln.cpp - the kiln command-line tool ------------------------------===//
//
//   kiln compile|run|inspect|generate|tokenize|train|merge [options]
//   kiln --help | --version
//
// The commands live in the KilnTools library (tools/Commands.h), which the
// Python module shares; this is the program around them.
//
// Exit status: 0 on success, 1 when the model has errors, 2 for bad usage.
//
//===----------------------------------------------------------------------===//
#include "tools/Commands.h"

#include "llvm/Config/llvm-config.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <string>
#include <unistd.h>
#include <vector>

#ifndef KILN_VERSION
#define KILN_VERSION "0.0.0"
#endif

using kiln::tools::helpText;
using kiln::tools::usageError;

namespace {

/// This process's runnable threads (state R in /proc/self/task/*/stat),
/// this one included.
int ownRunnableThreads() {
  int running = 0;
  DIR *tasks = opendir("/proc/self/task");
  if (!tasks)
    return 1;
  while (dirent *e = readdir(tasks)) {
    if (e->d_name[0] == '.')
      continue;
    std::string path = std::string("/proc/self/task/") + e->d_name + "/stat";
    std::FILE *f = std::fopen(path.c_str(), "r");
    if (!f)
      continue;
    char buf[512];
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = 0;
    // "tid (name) S ...": the state follows the last ')'.
    const char *close = std::strrchr(buf, ')');
    if (close && close[1] == ' ' && close[2] == 'R')
      ++running;
  }
  closedir(tasks);
  return std::max(running, 1);
}

/// Runnable tasks on the machine besides this process's: the fewest of five
/// samples of /proc/stat's procs_running less this process's runnable
/// threads, a millisecond apart (so that a moment's blip does not count);
/// -1 when it cannot be read.
int otherRunnableTasks() {
  int fewest = -1;
  for (int i = 0; i < 5; ++i) {
    if (i)
      usleep(1000);
    std::FILE *f = std::fopen("/proc/stat", "r");
    if (!f)
      return -1;
    char line[256];
    int running = -1;
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "procs_running %d", &running) == 1)
        break;
    std::fclose(f);
    if (running < 1)
      return -1;
    int others = std::max(0, running - ownRunnableThreads());
    fewest = fewest < 0 ? others : std::min(fewest, others);
  }
  return fewest;
}

/// How OpenMP's waiting threads wait. Long spins (libgomp's default,
/// 300,000 times, about 3 ms, before they sleep) make kiln crawl when
/// another program shares the cores: with one of two cores busy, training
/// took 1.6-2x as long and decoding 1.7x (bench/threads.py,
/// docs/threads.md). Threads that sleep at once (OMP_WAIT_POLICY=PASSIVE)
/// pay a wake-up for every parallel region instead, slow on a virtual
/// machine: a decoding step runs about a hundred regions, and on free cores
/// decoded 1.2-1.4x slower. Short spins (1,000) lost to one or the other
/// in both cases. So kiln looks when it starts: if other work is runnable,
/// waiting threads sleep at once; if the cores are free, they spin as
/// libgomp's default does. OpenMP reads this from the environment once,
/// when the library loads, before main; so unless the user chose a policy,
/// kiln sets it and runs itself again. If that fails it simply goes on with
/// the default. `import kiln` decides the same way (python/kiln/__init__.py).
void chooseWaitPolicy(char **argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT"))
    return;
  int failed = otherRunnableTasks() == 0
                   ? setenv("GOMP_SPINCOUNT", "300000", /*overwrite=*/0)
                   : setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/0);
  if (failed)
    return;
  execv("/proc/self/exe", argv);
}

} // namespace

int main(int argc, char **argv) {
  chooseWaitPolicy(argv);
  llvm::InitLLVM init(argc, argv);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    llvm::errs() << helpText("");
    return 2;
  }
  llvm::StringRef cmd = args[0];
  if (cmd == "--help" || cmd == "-h") {
    llvm::outs() << helpText("");
    return 0;
  }
  if (cmd == "help") { // kiln help [COMMAND]
    if (args.size() > 2 || (args.size() == 2 && helpText(args[1]).empty()))
      return usageError("'kiln help' takes one of: compile, run, inspect, "
                        "generate, tokenize, train, merge");
    llvm::outs() << helpText(args.size() == 2 ? args[1] : "");
    return 0;
  }
  if (cmd == "--version") {
    llvm::outs() << "kiln " << KILN_VERSION << " (MLIR " << LLVM_VERSION_STRING
                 << ")\n";
    return 0;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (cmd == "compile")
    return kiln::tools::compileCommand(rest);
  if (cmd == "run")
    return kiln::tools::runCommand(rest);
  if (cmd == "inspect")
    return kiln::tools::inspectCommand(rest);
  if (cmd == "generate")
    return kiln::tools::generateCommand(rest);
  if (cmd == "tokenize")
    return kiln::tools::tokenizeCommand(rest);
  if (cmd == "train")
    return kiln::tools::trainCommand(rest);
  if (cmd == "merge")
    return kiln::tools::mergeCommand(rest);
  return usageError(
      "unknown command '" + cmd +
      "'; the commands are: compile, run, inspect, generate, tokenize, train, "
      "merge");
}
