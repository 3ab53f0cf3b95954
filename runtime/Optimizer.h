//===- Optimizer.h - updates shared by kernels and trainer ---*- C++ -*-===//
#ifndef KILN_RUNTIME_OPTIMIZER_H
#define KILN_RUNTIME_OPTIMIZER_H

#include "runtime/Tensor.h"

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace kiln::runtime {

/// One parameter's moment: its own heap memory, or a view of pages of the
/// state's file (OptimizerState::mapFile). Copies are heap memory.
class MomentBuffer {
public:
  MomentBuffer() = default;
  MomentBuffer(const MomentBuffer &o) : heap_(o.data(), o.data() + o.size()) {}
  MomentBuffer &operator=(const MomentBuffer &o) {
    if (this != &o) {
      std::vector<float> copy(o.data(), o.data() + o.size());
      heap_ = std::move(copy);
      mapped_ = nullptr;
      n_ = 0;
    }
    return *this;
  }
  MomentBuffer(MomentBuffer &&) = default;
  MomentBuffer &operator=(MomentBuffer &&) = default;

  size_t size() const { return mapped_ ? n_ : heap_.size(); }
  float *data() { return mapped_ ? mapped_ : heap_.data(); }
  const float *data() const { return mapped_ ? mapped_ : heap_.data(); }
  /// n copies of `value`: in place when the buffer already holds n (a
  /// mapped one stays mapped), else in fresh heap memory.
  void assign(size_t n, float value);
  /// Makes the buffer a view of n floats at `at` (pages of a mapped file).
  void view(float *at, size_t n) {
    heap_ = std::vector<float>();
    mapped_ = at;
    n_ = n;
  }
  bool empty() const { return size() == 0; }
  bool mapped() const { return mapped_ != nullptr; }

private:
  std::vector<float> heap_;
  float *mapped_ = nullptr;
  size_t n_ = 0;
};

class MappedFile;

/// Optimizer state per parameter (in the artifact's parameter order): AdamW's
/// first and second moments, or SGD's momentum buffer in `m`. Owned by the
/// Model; kiln.optimizer_update kernels and the Trainer share it.
struct OptimizerState {
  std::vector<MomentBuffer> m, v;
  /// Puts the moments in the file at `path` (created or truncated, then
  /// memory-mapped shared) instead of RAM, so the kernel pages them out
  /// under memory pressure: `sizes[i]` floats for parameter i's m (and v
  /// with `second`), 0 for none, each zero. The file keeps the state as
  /// training writes it.
  Status mapFile(const std::string &path, const std::vector<size_t> &sizes,
                 bool second);
  /// The mapping, when the moments live in a file.
  std::shared_ptr<MappedFile> file;
};

/// One optimizer step for one parameter of n elements; both the compiled
/// kiln.optimizer_update kernel and the Trainer's host path call it, so the
/// two are bit-identical.
struct UpdateRule {
  bool adamw = true;
  float lr = 0;     // the step's learning rate
  int64_t step = 1; // 1-based update count (bias correction, SGD's start)
  float clip = 1;   // gradient scale from global-norm clipping
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weightDecay = 0, momentum = 0.9f;
};
void applyUpdate(const UpdateRule &rule, float *param, float *m, float *v,
                 const float *grad, int64_t n);

/// The sum of squares of every element of the tensors, accumulated in fixed
/// chunks in double and added in order: the same result for any thread
/// count.
double sumOfSquares(const std::vector<std::pair<const float *, int64_t>> &ts);
/// sumOfSquares's chunks: each tensor from its start in kSquareSumChunk
/// elements.
constexpr int64_t kSquareSumChunk = int64_t(1) << 16;
/// The chunks' sums of squares in order (tensor by tensor), which
/// sumOfSquares adds in that order: ranks that each hold whole chunks of the
/// gradients (ZeRO) combine their partial sums into the same norm.
std::vector<double>
squareSumsByChunk(const std::vector<std::pair<const float *, int64_t>> &ts);

/// The clipping scale for a global norm: max_norm / (norm + 1e-6) when the
/// norm exceeds a positive max_norm, else 1 (as torch's clip_grad_norm_).
float clipScale(double norm, double maxNorm);

} // namespace kiln::runtime

#endif
