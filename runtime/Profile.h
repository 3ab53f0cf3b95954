//===- Profile.h - kernel timelines as Chrome/Perfetto traces ---*- C++ -*-===//
//
// A Profiler attached to a model (Model::setProfiler) records one slice per
// kernel of every call — its op, operand shapes, source location, bytes
// and time — plus one per call, and writes them in the Chrome trace event
// format that ui.perfetto.dev and chrome://tracing open. `kiln run`,
// `kiln train` and `kiln generate --profile=trace.json` use it; `kiln
// inspect --profile=trace.json` prints the top kernels (profileSummary).
//
//   auto profiler = std::make_shared<Profiler>();
//   model->setProfiler(profiler);
//   model->run("forward", inputs, outputs);
//   profiler->writeTrace("trace.json");
//
// A profiler is safe to share between threads and models. It is not a
// global: only the calls of models it is attached to are recorded.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_PROFILE_H
#define KILN_RUNTIME_PROFILE_H

#include "runtime/Tensor.h"

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace kiln::runtime {

/// One kernel, call or host phase, as a trace slice.
struct ProfileSlice {
  enum class Kind { Kernel, Call, Host };
  Kind kind = Kind::Kernel;
  std::string function; // the call's function ("forward", "train_step")
  std::string name;     // the op ("FusedMatmul"), the function, the phase
  std::string shapes;   // "f32[8,64,768], f32[768,2304] -> f32[8,64,2304]"
  std::string location; // in the model's source, "gpt2.kiln:31:9"
  uint64_t bytes = 0;   // operands and results, as stored
  double startUs = 0;   // from the profiler's creation
  double durationUs = 0;
  int thread = 0;  // the calling thread, numbered in order of appearance
  int kernel = -1; // index in the function's kernels (Kernel slices)
};

class Profiler {
public:
  /// Slices kept; later ones are counted (dropped()) but not stored, so a
  /// long run cannot fill the memory or write a trace no viewer opens.
  static constexpr size_t kMaxSlices = 250000;

  Profiler() : origin_(std::chrono::steady_clock::now()) {}

  /// Microseconds since the profiler was made.
  double nowUs() const {
    return std::chrono::duration<double, std::micro>(
               std::chrono::steady_clock::now() - origin_)
        .count();
  }
  /// The calling thread's number in the trace.
  int threadIndex();
  void record(ProfileSlice slice);

  std::vector<ProfileSlice> slices() const;
  uint64_t dropped() const;

  /// The trace as Chrome trace event JSON.
  std::string traceJson() const;
  /// Writes traceJson() to `path` atomically.
  Status writeTrace(const std::string &path) const;

private:
  std::chrono::steady_clock::time_point origin_;
  mutable std::mutex mutex_;
  std::vector<ProfileSlice> slices_;
  uint64_t dropped_ = 0;
  std::map<std::thread::id, int> threads_;
};

/// Reads a trace that writeTrace wrote (at most `maxBytes`) back into its
/// slices; errors name the file and the event.
Status readTrace(const std::string &path, std::vector<ProfileSlice> &out,
                 uint64_t maxBytes = uint64_t(1) << 30);

/// The `top` kernels that took the most time, grouped by op and source
/// location, then the time by op and per call: `kiln inspect --profile`.
std::string profileSummary(const std::vector<ProfileSlice> &slices,
                           size_t top = 20);

} // namespace kiln::runtime

#endif
