//===- Vector.h - vectorizable math for CPU kernels -------------*- C++ -*-===//
//
// Branch-free scalar functions that compilers vectorize inside
// `#pragma omp simd` loops (libm's expf is a call the vectorizer cannot
// inline). Accuracy is a few ulp, well inside the tolerances the kernels are
// tested to against float64 references.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_VECTOR_H
#define KILN_RUNTIME_VECTOR_H

#include <cmath>
#include <cstdint>
#include <cstring>

namespace kiln::runtime {

/// e^x for float: Cody-Waite range reduction to [-ln2/2, ln2/2] and a
/// degree-6 polynomial (Cephes' expf coefficients); 0 below -87.3 (so
/// exp(-inf) = 0), +inf above 88.7.
#pragma omp declare simd
inline float vexp(float x) {
  const float hi = 88.72283905f, lo = -87.33654475f;
  float c = x > hi ? hi : (x < lo ? lo : x);
  float n = __builtin_floorf(c * 1.44269504088896341f + 0.5f);
  float r = c - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  float y = p * scale;
  y = x < lo ? 0.0f : y;
  return x > hi ? __builtin_inff() : y;
}

/// 1 / sqrt(var + eps) of one row of `C` values, with the variance taken
/// about the mean (`centered`, layernorm, which stores it in `mean`) or
/// about zero (rmsnorm, `mean` = 0). Sums in double, so the statistics do
/// not depend on how rows are split between threads.
inline float normStats(const float *x, int64_t C, bool centered, float eps,
                       float &mean) {
  double m = 0, var = 0;
  if (centered) {
    for (int64_t i = 0; i < C; ++i)
      m += x[i];
    m /= C;
  }
  for (int64_t i = 0; i < C; ++i)
    var += (x[i] - m) * (x[i] - m);
  var /= C;
  mean = static_cast<float>(m);
  return static_cast<float>(1.0 / std::sqrt(var + eps));
}

} // namespace kiln::runtime

#endif
