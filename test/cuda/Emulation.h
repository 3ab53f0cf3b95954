//===- Emulation.h - run generated CUDA C++ on the CPU ----------*- C++ -*-===//
//
// Included before a file of `kiln compile --emit=cuda` output (with
// -DKILN_CUDA_EMULATION), it compiles the same source for the host: every
// CUDA thread of a block is a host thread, blocks run one after another,
// `__shared__` memory is one static per kernel (the one block running owns
// it), `__syncthreads()` is a barrier across the block's threads. So the
// generated kernels run here exactly as written, at any grid and block
// size, and tests compare them with the CPU runtime's kernels.
//
//   kilnLaunch(kernel, dim3(3), dim3(64), args);
//
//===----------------------------------------------------------------------===//
#ifndef KILN_TEST_CUDA_EMULATION_H
#define KILN_TEST_CUDA_EMULATION_H

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <math.h> // erff, expf, ... as CUDA names them
#include <pthread.h>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x = 1, unsigned y = 1, unsigned z = 1) : x(x), y(y), z(z) {}
};

namespace kiln_emulation {
inline thread_local dim3 thread_idx, block_idx;
inline dim3 block_dim, grid_dim;
inline pthread_barrier_t barrier;
} // namespace kiln_emulation

#define threadIdx kiln_emulation::thread_idx
#define blockIdx kiln_emulation::block_idx
#define blockDim kiln_emulation::block_dim
#define gridDim kiln_emulation::grid_dim

inline void __syncthreads() { pthread_barrier_wait(&kiln_emulation::barrier); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __int_as_float(int bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

/// Runs `kernel` over `grid` x `block` threads: blocks in turn, the threads
/// of a block at once.
template <typename... Params, typename... Args>
void kilnLaunch(void (*kernel)(Params...), dim3 grid, dim3 block,
                Args &&...args) {
  namespace e = kiln_emulation;
  e::grid_dim = grid;
  e::block_dim = block;
  unsigned threads = block.x * block.y * block.z;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        pthread_barrier_init(&e::barrier, nullptr, threads);
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (unsigned t = 0; t < threads; ++t)
          pool.emplace_back([&, t] {
            e::block_idx = dim3(bx, by, bz);
            e::thread_idx = dim3(t % block.x, t / block.x % block.y,
                                 t / (block.x * block.y));
            kernel(args...);
          });
        for (std::thread &th : pool)
          th.join();
        pthread_barrier_destroy(&e::barrier);
      }
}

/// Calls of the generated kernels in plain types, so that a test that does
/// not include the generated file can make them.
struct KilnEmulatedCall { // KilnElementwiseArgs
  const float *in[40];
  long long strides[40][8];
  int contiguous[40];
  int nin;
  float *out;
  long long dims[8];
  int rank;
  long long total;
};
struct KilnEmulatedNorm { // KilnNormArgs
  const float *x, *weight, *bias;
  float *y;
  long long rows;
  int C;
  float eps;
  int centered;
};

namespace kiln_emulation {
/// A generated kernel linked into this program.
struct Kernel {
  std::string model, function;
  int index;
  int kind; // KilnCudaKind
  const void *entry;
  /// Run it over `grid` x `block` threads (the one for its kind).
  void (*elementwise)(const void *entry, const KilnEmulatedCall &, dim3, dim3);
  void (*norm)(const void *entry, const KilnEmulatedNorm &, dim3, dim3);
};
inline std::vector<Kernel> &kernels() {
  static std::vector<Kernel> all;
  return all;
}
} // namespace kiln_emulation

/// What a generated file ends with (under KILN_CUDA_EMULATION): its table
/// of kernels joins kiln_emulation::kernels(), each with launchers that
/// fill the file's own argument blocks.
#define KILN_CUDA_REGISTER(table)                                              \
  static void kiln_cuda_elementwise_##table(                                   \
      const void *entry, const KilnEmulatedCall &c, dim3 grid, dim3 block) {   \
    KilnElementwiseArgs a{};                                                   \
    for (int i = 0; i < c.nin; ++i) {                                          \
      a.in[i].data = c.in[i];                                                  \
      for (int d = 0; d < 8; ++d)                                              \
        a.in[i].strides[d] = c.strides[i][d];                                  \
      a.in[i].contiguous = c.contiguous[i];                                    \
    }                                                                          \
    a.out = c.out;                                                             \
    for (int d = 0; d < 8; ++d)                                                \
      a.dims[d] = c.dims[d];                                                   \
    a.rank = c.rank;                                                           \
    a.total = c.total;                                                         \
    kilnLaunch(reinterpret_cast<void (*)(KilnElementwiseArgs)>(                \
                   const_cast<void *>(entry)),                                 \
               grid, block, a);                                                \
  }                                                                            \
  static void kiln_cuda_norm_##table(                                          \
      const void *entry, const KilnEmulatedNorm &c, dim3 grid, dim3 block) {   \
    KilnNormArgs a{                                                            \
        c.x, c.weight, c.bias, c.y, c.rows, c.C, c.eps, c.centered};           \
    kilnLaunch(                                                                \
        reinterpret_cast<void (*)(KilnNormArgs)>(const_cast<void *>(entry)),   \
        grid, block, a);                                                       \
  }                                                                            \
  static const bool kiln_cuda_registered_##table = [] {                        \
    for (const KilnCudaKernel *k = table; k->model; ++k)                       \
      kiln_emulation::kernels().push_back(                                     \
          {k->model, k->function, k->kernel, k->kind, k->entry,                \
           kiln_cuda_elementwise_##table, kiln_cuda_norm_##table});            \
    return true;                                                               \
  }();

#endif
