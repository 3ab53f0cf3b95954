//===- Optimizer.cpp - optimizer updates ----------------------------------===//
#include "runtime/Optimizer.h"

#include <algorithm>
#include <cmath>

using namespace kiln::runtime;

float kiln::runtime::clipScale(double norm, double maxNorm) {
  return maxNorm > 0 && norm > maxNorm
             ? static_cast<float>(maxNorm / (norm + 1e-6))
             : 1.0f;
}

namespace {

/// Vectorized in double: the partial sums of one chunk are combined in a
/// fixed order, so the result does not depend on the thread count.
__attribute__((target_clones("arch=x86-64-v3", "default"))) double
chunkSumOfSquares(const float *x, int64_t n) {
  double acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < n; ++j)
    acc += static_cast<double>(x[j]) * x[j];
  return acc;
}

} // namespace

double kiln::runtime::sumOfSquares(
    const std::vector<std::pair<const float *, int64_t>> &ts) {
  const int64_t chunk = 1 << 16;
  std::vector<std::pair<size_t, int64_t>> chunks; // (tensor, start)
  for (size_t i = 0; i < ts.size(); ++i)
    for (int64_t s = 0; s < ts[i].second; s += chunk)
      chunks.push_back({i, s});
  std::vector<double> partial(chunks.size());
#pragma omp parallel for schedule(dynamic, 4) if (chunks.size() > 1)
  for (int64_t c = 0; c < static_cast<int64_t>(chunks.size()); ++c) {
    auto [i, s] = chunks[c];
    int64_t e = std::min<int64_t>(s + chunk, ts[i].second);
    const float *x = ts[i].first;
    partial[c] = chunkSumOfSquares(x + s, e - s);
  }
  double sum = 0;
  for (double p : partial)
    sum += p;
  return sum;
}

__attribute__((target_clones("arch=x86-64-v3", "default"))) void
kiln::runtime::applyUpdate(const UpdateRule &r, float *p, float *m, float *v,
                           const float *g, int64_t n) {
  const float lr = r.lr, clip = r.clip;
  if (r.adamw) {
    // As torch.optim.AdamW: p *= 1 - lr wd; then
    // p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps).
    double bc1 = 1.0 - std::pow(static_cast<double>(r.beta1),
                                static_cast<double>(r.step));
    double bc2 = 1.0 - std::pow(static_cast<double>(r.beta2),
                                static_cast<double>(r.step));
    const float stepSize = static_cast<float>(lr / bc1);
    const float bc2Sqrt = static_cast<float>(std::sqrt(bc2));
    const float b1 = r.beta1, b2 = r.beta2, eps = r.eps;
    const float decay = 1.0f - lr * r.weightDecay;
#pragma omp parallel for simd if (n > 65536)
    for (int64_t j = 0; j < n; ++j) {
      float gj = g[j] * clip;
      p[j] *= decay;
      m[j] = b1 * m[j] + (1.0f - b1) * gj;
      v[j] = b2 * v[j] + (1.0f - b2) * gj * gj;
      p[j] -= stepSize * m[j] / (std::sqrt(v[j]) / bc2Sqrt + eps);
    }
    return;
  }
  // As torch.optim.SGD: g += wd p; buf = mu buf + g (buf = g at step 1);
  // p -= lr buf.
  const float mu = r.momentum, wd = r.weightDecay;
  const bool first = r.step == 1 || mu == 0.0f;
#pragma omp parallel for if (n > 65536)
  for (int64_t j = 0; j < n; ++j) {
    float gj = g[j] * clip + wd * p[j];
    m[j] = first ? gj : mu * m[j] + gj;
    p[j] -= lr * m[j];
  }
}
