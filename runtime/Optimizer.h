//===- Optimizer.h - updates shared by kernels and trainer ---*- C++ -*-===//
#ifndef KILN_RUNTIME_OPTIMIZER_H
#define KILN_RUNTIME_OPTIMIZER_H

#include <cstdint>
#include <utility>
#include <vector>

namespace kiln::runtime {

/// Optimizer state per parameter (in the artifact's parameter order): AdamW's
/// first and second moments, or SGD's momentum buffer in `m`. Owned by the
/// Model; kiln.optimizer_update kernels and the Trainer share it.
struct OptimizerState {
  std::vector<std::vector<float>> m, v;
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

/// The clipping scale for a global norm: max_norm / (norm + 1e-6) when the
/// norm exceeds a positive max_norm, else 1 (as torch's clip_grad_norm_).
float clipScale(double norm, double maxNorm);

} // namespace kiln::runtime

#endif
