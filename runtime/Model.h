//===- Model.h - load and run a .kart artifact ------------------*- C++ -*-===//
//
//   std::unique_ptr<Model> m;
//   if (Status s = Model::load("gpt2.kart", m); !s) { report(s.message()); }
//   std::vector<Tensor> out;
//   Status s = m->run("forward", {{"tokens", tokens}}, out);
//
// Loading verifies the artifact completely (FlatBuffers verifier, then
// semantic checks of version, value and kernel tables, parameter byte ranges)
// before anything executes.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_MODEL_H
#define KILN_RUNTIME_MODEL_H

#include "runtime/Optimizer.h"
#include "runtime/Profile.h"
#include "runtime/Tensor.h"
#include "runtime/Tokenizer.h"
#include "runtime/attention/PatternSpec.h"
#include "runtime/lora/LoraSpec.h"
#include "runtime/quant/QuantView.h"

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

namespace kiln::runtime {

/// The artifact format this runtime reads and writes.
constexpr uint32_t kFormatVersion = 4;

/// The most threads a model or call may ask for: more than any machine has
/// (GNU OpenMP fails creating far more). The CLI's --threads and Python's
/// `threads` are refused beyond it; setThreads clamps to it.
constexpr int kMaxThreads = 4096;

/// What a hyperparameter is: Python gets ints and bools back as such.
enum class HParamKind { Number, Integer, Boolean };

/// Bounds of an artifact's history (entries, and bytes per entry).
constexpr size_t kMaxHistory = 1000;
constexpr size_t kMaxHistoryLine = 16384;

struct ArgInfo {
  std::string name;
  DType dtype;
  std::vector<std::string> dims; // "B", "T", "768"
};

/// An attention kernel and its pattern (`kiln inspect --attention-layout`
/// draws its block layout: runtime/attention/Layout.h).
struct AttentionSite {
  size_t kernel = 0;    // index in the function's plan
  std::string location; // where the model wrote it
  int64_t heads = 0, kvHeads = 0;
  attention::PatternSpec pattern;
};

/// One attention's key/value cache in a compiled `decode` function: the
/// numbers of its two inputs, and its window (0: every earlier position;
/// w: a rolling cache, which needs at least w slots).
struct CacheInputs {
  int key = -1, value = -1;
  int64_t window = 0;
};

struct FunctionInfo {
  std::string name;
  std::vector<ArgInfo> inputs;
  std::vector<ArgInfo> outputs;
  size_t kernels = 0;
  size_t values = 0;
  /// One line per kernel: "Matmul %4, %7<w> -> %8  gpt2.kiln:20:5".
  std::vector<std::string> plan;
  /// The forward attention kernels (their gradients share the pattern).
  std::vector<AttentionSite> attention;
  /// The key/value caches it reads and extends (kiln.cached_attention).
  std::vector<CacheInputs> caches;
};

struct ParameterInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  /// False for a frozen parameter: training leaves it as it is and keeps no
  /// optimizer state for it.
  bool trainable = true;
};

/// Memory needed by one call, for given symbolic-dimension sizes.
struct MemoryReport {
  size_t arenaBytes = 0;        // the planned arena (slots reused by liveness)
  size_t intermediateBytes = 0; // every intermediate in its own buffer
};

class FunctionState;
class PackedWeights;
namespace cuda {
class Driver;
class Gpu;
} // namespace cuda
struct StatePool;

/// How a call runs. Training mode draws dropout masks from `seed` (the
/// trainer derives one per step and micro-batch); inference leaves dropout
/// the identity.
/// Which implementation of each op a call runs: the fast kernels (oneDNN
/// primitives, blocked and vectorized loops), or the naive reference
/// kernels that define what each op computes — slower, for checking the
/// fast ones and for debugging a result.
enum class KernelChoice { Fast, Reference };

struct KernelContext;

struct RunOptions {
  bool training = false;
  uint64_t seed = 0;
  /// Unset: KILN_REFERENCE_KERNELS=1 in the environment chooses the
  /// reference kernels, anything else the fast ones.
  std::optional<KernelChoice> kernels;
  /// Records the call's kernels (runtime/Profile.h); unset: the model's
  /// profiler (Model::setProfiler), if any.
  Profiler *profiler = nullptr;
  /// Called before and after each kernel with its operands and results (to
  /// compare a kernel with another implementation of it, as the CUDA
  /// emulation tests do: before, to keep inputs a kernel overwrites in
  /// place); KernelContext is in runtime/Kernels.h.
  std::function<void(const KernelContext &)> beforeKernel, afterKernel;
  /// Called once for each of the function's results as soon as it is
  /// final — right after the kernel that computes it, or before the first
  /// kernel for a result that is an input or a weight — with its bytes in
  /// the call's memory (the result's dtype and shape), valid until the call
  /// returns. Data-parallel training starts reducing a gradient while the
  /// backward pass computes the others. The CPU executor calls it; a call
  /// on another device does not (its results come at the end, as always).
  std::function<void(size_t result, const void *data)> outputReady;
};

/// Threads for kiln's kernels and oneDNN (one OpenMP pool) in calls of
/// models without their own count (Model::setThreads). The default is
/// OMP_NUM_THREADS when the environment sets it, else every core; `n <= 0`
/// restores it. It is kiln's own setting: another library changing
/// OpenMP's count on the calling thread (importing PyTorch sets it to its
/// own choice) does not change kiln's.
void setNumThreads(int n);
int numThreads();

/// Sets the calling thread's OpenMP thread count for a scope — to `n`, or
/// to numThreads() when `n <= 0` — and restores the previous count when it
/// ends.
class ThreadScope {
public:
  explicit ThreadScope(int n);
  ~ThreadScope();
  ThreadScope(const ThreadScope &) = delete;
  ThreadScope &operator=(const ThreadScope &) = delete;

private:
  int saved_ = 0;
};

/// The CUDA executable an artifact carries (kiln compile --target=cuda).
struct CudaExecutableInfo {
  uint64_t bytes = 0;                     // the fatbin's size
  std::vector<std::string> architectures; // "sm_80", ..., "compute_90"
  size_t entries = 0;                     // its kernels' entry points
  bool only = false; // every kernel runs on CUDA (--target=cuda alone)
};

/// How an artifact is loaded.
struct LoadOptions {
  /// The external weights file, for an artifact compiled with
  /// --external-weights. Empty: the file the artifact names, in the
  /// artifact's own directory. The artifact only ever names a file beside
  /// itself (a bare file name); anywhere else the user points explicitly.
  std::string weightsFile;
  /// Where the model's calls run: "cpu" (or empty), "cuda" (GPU 0) or
  /// "cuda:N" — the NVIDIA driver, opened at load time (useCuda); an
  /// error says why when there is no driver or GPU.
  std::string device;
};

/// Opens the device `options.device` names: nothing (a null driver) for
/// the CPU, the NVIDIA driver and GPU N for "cuda[:N]". An error, naming
/// the option, for another name or when there is no driver or GPU. Loading
/// does this; a caller about to do long work for a device (compiling its
/// kernels) can ask first.
Status openLoadDevice(const LoadOptions &options,
                      std::shared_ptr<cuda::Driver> &driver);

class Model {
public:
  ~Model();
  static Status load(const std::string &path, std::unique_ptr<Model> &out,
                     const LoadOptions &options = {});
  /// `dir` is where an external weights file lies (the artifact's
  /// directory), unless `options` names the file.
  static Status fromBytes(std::vector<uint8_t> bytes,
                          std::unique_ptr<Model> &out,
                          const std::string &dir = ".",
                          const LoadOptions &options = {});

  const std::string &modelName() const { return model_; }
  const std::vector<FunctionInfo> &functions() const { return infos_; }
  const std::vector<ParameterInfo> &parameters() const { return params_; }
  /// The kind of hyperparameters()[i], as the model declared it.
  HParamKind hyperparameterKind(size_t i) const { return hparamKinds_.at(i); }
  const std::vector<std::pair<std::string, double>> &hyperparameters() const {
    return hparams_;
  }

  /// Runs `function` on named inputs. `outputs` is resized to the results;
  /// an entry that already has a result's type and shape is overwritten in
  /// place (no allocation when a function runs repeatedly).
  ///
  /// Safe to call from several threads at once, on one model or on many:
  /// each call runs in an execution context of its own (arena, bound
  /// shapes, oneDNN stream and scratchpad), taken from a per-function pool,
  /// so concurrent calls give exactly the sequential results. Calls that
  /// write the parameters (a compiled train_step) run alone: they wait for
  /// the calls in flight and hold back new ones until they finish, so a
  /// reader never sees half-updated weights.
  Status run(const std::string &function,
             const std::map<std::string, Tensor> &inputs,
             std::vector<Tensor> &outputs, const RunOptions &options = {});

  /// Threads for this model's calls (0: the calling thread's count, by
  /// default one per core). Per model, so models used from different
  /// threads do not affect each other.
  void setThreads(int n) {
    threads_ = n > 0 ? (n < kMaxThreads ? n : kMaxThreads) : 0;
  }
  int threads() const { return threads_; }

  /// Records every call of this model — each kernel with its op, shapes,
  /// source location, bytes and time — into `profiler` (null: none, the
  /// default). Calls already running finish with the profiler they began
  /// with.
  void setProfiler(std::shared_ptr<Profiler> profiler) {
    std::lock_guard<std::mutex> lock(profilerMutex_);
    profiler_ = std::move(profiler);
  }
  std::shared_ptr<Profiler> profiler() const {
    std::lock_guard<std::mutex> lock(profilerMutex_);
    return profiler_;
  }

  /// Arena size versus the sum of all intermediates for `function` with the
  /// symbolic dimensions bound to `dims` (e.g. {"B": 1, "T": 128}).
  Status memoryReport(const std::string &function,
                      const std::map<std::string, int64_t> &dims,
                      MemoryReport &report);

  /// Runs this model's calls on the GPU behind `driver` from now on (null:
  /// back to the CPU): its CUDA executable is loaded there, parameters
  /// are copied over on first use and again whenever the host's copy
  /// changes, inputs and outputs cross at each call's boundary. Weights
  /// and moments a compiled train step updates stay on the GPU; they come
  /// back when read (parameter, saveWeights, saveArtifact, optimizerState)
  /// or when the model leaves that GPU. Fails
  /// for an artifact without CUDA kernels (kiln compile --target=cpu,cuda).
  Status useCuda(std::shared_ptr<cuda::Driver> driver);
  /// The GPU's description while the model runs on one, with the library
  /// its matrix products use ("...; matrix products on cuBLASLt 13.1.0"),
  /// else "".
  std::string deviceDescription() const;

  /// The artifact's CUDA executable, if it has one.
  const std::optional<CudaExecutableInfo> &cudaExecutable() const {
    return cudaExecutable_;
  }

  /// The artifact's tokenizer, if it has one (empty() if not): recorded by
  /// `kiln train` or by `kiln compile --tokenizer`.
  const Tokenizer &tokenizer() const { return tokenizer_; }
  /// Gives the model a tokenizer (which saveArtifact then writes); it must
  /// fit the model's vocabulary (checkTokenizerFits).
  Status setTokenizer(Tokenizer tokenizer);
  /// How the artifact was made, oldest first (kart.fbs Program.history):
  /// the compile command, then each training run.
  const std::vector<std::string> &history() const { return history_; }
  /// Adds a line (a training run) that saveArtifact then writes; the
  /// oldest training lines give way past kMaxHistory entries.
  void appendHistory(std::string line);
  /// The size of the last dimension of `forward`'s logits, or -1 when the
  /// model has no such function or the size is symbolic.
  int64_t vocabSize() const;

  /// Writes the artifact as it is now, parameters included (after training,
  /// the trained values), atomically.
  Status saveArtifact(const std::string &path) const;

  /// Copies a parameter's values out (for tests and checkpoints).
  Status parameter(const std::string &name, Tensor &out) const;

  /// Optimizer moments per parameter, which compiled `train_step` functions
  /// (kiln.optimizer_update) and the Trainer update and checkpoints save.
  /// Brought up to date first where a GPU's train steps hold newer moments
  /// (which the GPU then drops: the next step uploads the host's, which the
  /// caller may have changed). Not while a call runs.
  Status optimizerState(OptimizerState *&state);

  /// The live storage of parameter `i` (in `parameters()` order), which the
  /// model owns: an optimizer updates it in place between calls, holding
  /// lockParameters() so that no call reads the weights meanwhile. Brought
  /// up to date first where a GPU's train steps hold a newer copy.
  Status parameterData(size_t i, float *&data);
  /// Excludes every call of the model while the returned lock is held (for
  /// writers of the parameters: optimizer updates, loading weights).
  std::unique_lock<std::shared_mutex> lockParameters() const {
    return std::unique_lock<std::shared_mutex>(paramsMutex_);
  }

  /// Replaces every parameter's values from named tensors: each parameter
  /// must be present with its exact dtype and shape, and nothing else may
  /// be. Everything is checked before anything is copied.
  Status setParameters(const std::vector<std::pair<std::string, Tensor>> &t);

  /// Writes every parameter, by name, as a .safetensors file.
  Status saveWeights(const std::string &path) const;

  /// How parameter `i` is stored: "f32" (its dtype) or its quantization
  /// ("nf4:block=64,double=true"), and the bytes it takes (codes, scales
  /// and second-level values included).
  std::string storage(size_t i) const;
  uint64_t storedBytes(size_t i) const;

  /// The model's LoRA adapters (kiln compile --lora), if it has them: rank,
  /// alpha and the adapted weights; each target X.weight has parameters
  /// X.lora_A.weight and X.lora_B.weight (runtime/lora/LoraSpec.h).
  const std::optional<lora::LoraSpec> &lora() const { return lora_; }
  /// Writes the adapters as PEFT does (runtime/lora/Adapter.h) into `dir`
  /// (created if needed): adapter_model.safetensors, adapter_config.json.
  Status saveAdapter(const std::string &dir) const;
  /// The weights with the adapters folded in, as a checkpoint the model's
  /// source compiles from without --lora: each target becomes W + (alpha /
  /// r) B A (summed in double) — f32, or quantized as `requantize` says —
  /// the adapters are left out, and every other parameter is as
  /// saveWeights writes it.
  Status mergeAdapters(std::vector<std::pair<std::string, Tensor>> &out,
                       const quant::QuantSpec *requantize = nullptr) const;

private:
  Model() = default;
  Status init(const std::string &dir, const LoadOptions &options);
  /// Checks the quantized parameters' storage against their auxiliary
  /// tensors (which must close the parameter table) and builds their views;
  /// the auxiliary tensors then leave params_.
  Status loadQuantized(const void *program);
  /// Appends parameter `p` as saveWeights stores it (f32, or a quantized
  /// checkpoint's tensors).
  Status appendStored(const ParameterInfo &p,
                      std::vector<std::pair<std::string, Tensor>> &out) const;
  /// Checks the artifact's LoRA record against the parameter table.
  Status loadLora(const void *program);
  std::unique_ptr<FunctionState> newState(const StatePool &pool);
  /// Downloads parameter `i` where the GPU holds a newer copy than the
  /// host (a compiled train step wrote it there); `discard`: the host
  /// overwrites it next, so the GPU's copy is only dropped.
  Status syncParameter(size_t i, bool discard = false) const;
  /// Every parameter, and the optimizer moments, up to date on the host.
  Status syncAll();

  /// The artifact's bytes, 64-byte aligned so weights and FlatBuffers
  /// tables lie as the writer laid them out.
  struct Bytes {
    std::unique_ptr<uint8_t[]> storage;
    uint8_t *data = nullptr;
    size_t size = 0;
    /// Room for `n` bytes (uninitialized); an error, not an exception,
    /// when memory runs out.
    Status allocate(size_t n);
  };
  /// Ends a load whose bytes_ are in place: verifies and binds them, then
  /// moves the model to options.device.
  static Status finishLoad(std::unique_ptr<Model> m,
                           std::unique_ptr<Model> &out, const std::string &dir,
                           const LoadOptions &options);
  Bytes bytes_;
  std::string model_;
  std::vector<FunctionInfo> infos_;
  std::vector<ParameterInfo> params_;
  std::vector<std::pair<std::string, double>> hparams_;
  std::vector<HParamKind> hparamKinds_; // one per hparams_ entry
  std::vector<const uint8_t *> paramData_;
  std::vector<std::unique_ptr<quant::QuantView>> quantOwned_;
  std::vector<const quant::QuantView *> quantViews_; // per model parameter
  std::vector<Tensor> externalWeights_;
  Tokenizer tokenizer_;
  std::optional<lora::LoraSpec> lora_;
  std::vector<std::string> history_;
  std::optional<CudaExecutableInfo> cudaExecutable_;
  std::shared_ptr<cuda::Gpu> gpu_; // set by useCuda
  bool repack_ = false; // tokenizer or history changed: saveArtifact
                        // serializes the program again
  std::atomic<int> threads_{0};
  mutable std::mutex profilerMutex_;
  std::shared_ptr<Profiler> profiler_;
  OptimizerState optimizer_;
  std::vector<uint64_t> paramVersion_; // bumped on every write access
  std::unique_ptr<PackedWeights> packed_;
  std::vector<std::unique_ptr<StatePool>> pools_; // one per function
  mutable std::shared_mutex paramsMutex_; // shared: calls; unique: writers
};

} // namespace kiln::runtime

#endif
