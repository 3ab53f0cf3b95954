//===- Optimizer.cpp - optimizer updates ----------------------------------===//
#include "runtime/Optimizer.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

using namespace kiln::runtime;

namespace kiln::runtime {
/// A file mapped shared into memory, unmapped when the last user goes.
class MappedFile {
public:
  MappedFile(void *at, size_t bytes) : at_(at), bytes_(bytes) {}
  ~MappedFile() {
    if (at_)
      munmap(at_, bytes_);
  }
  MappedFile(const MappedFile &) = delete;
  MappedFile &operator=(const MappedFile &) = delete;
  float *floats() { return static_cast<float *>(at_); }

private:
  void *at_;
  size_t bytes_;
};
} // namespace kiln::runtime

void MomentBuffer::assign(size_t n, float value) {
  if (mapped_ && n == n_) {
    std::fill(mapped_, mapped_ + n, value);
    return;
  }
  mapped_ = nullptr;
  n_ = 0;
  heap_.assign(n, value);
}

Status OptimizerState::mapFile(const std::string &path,
                               const std::vector<size_t> &sizes, bool second) {
  size_t total = 0;
  for (size_t n : sizes) {
    if (n > (SIZE_MAX / sizeof(float) - total) / 2)
      return Status::error(path + ": the optimizer state is too large");
    total += second ? 2 * n : n;
  }
  size_t bytes = std::max<size_t>(total * sizeof(float), 1);
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return Status::error(path + ": cannot create the optimizer state file: " +
                         std::strerror(errno));
  // Zero-filled without writing: the file's pages come from the kernel as
  // they are first touched.
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    int e = errno;
    close(fd);
    return Status::error(path + ": cannot size the optimizer state file to " +
                         std::to_string(bytes) + " bytes: " + std::strerror(e));
  }
  void *at = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int e = errno;
  close(fd);
  if (at == MAP_FAILED)
    return Status::error(
        path + ": cannot map the optimizer state file: " + std::strerror(e));
  auto mapped = std::make_shared<MappedFile>(at, bytes);
  m.assign(sizes.size(), MomentBuffer());
  v.assign(sizes.size(), MomentBuffer());
  float *next = mapped->floats();
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (!sizes[i])
      continue;
    m[i].view(next, sizes[i]);
    next += sizes[i];
    if (second) {
      v[i].view(next, sizes[i]);
      next += sizes[i];
    }
  }
  file = std::move(mapped);
  return Status::ok();
}

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

std::vector<double> kiln::runtime::squareSumsByChunk(
    const std::vector<std::pair<const float *, int64_t>> &ts) {
  const int64_t chunk = kSquareSumChunk;
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
  return partial;
}

double kiln::runtime::sumOfSquares(
    const std::vector<std::pair<const float *, int64_t>> &ts) {
  double sum = 0;
  for (double p : squareSumsByChunk(ts))
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
