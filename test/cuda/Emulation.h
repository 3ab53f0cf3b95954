//===- Emulation.h - run generated CUDA C++ on the CPU ----------*- C++ -*-===//
//
// Included before a file of `kiln compile --emit=cuda` output (with
// -DKILN_CUDA_EMULATION), it compiles the same source for the host: every
// CUDA thread of a block is a host thread, blocks run one after another,
// `__shared__` memory is one static per kernel (the one block running owns
// it), `__syncthreads()` is a barrier across the block's threads (kept
// host threads, one per CUDA thread of a block), a warp
// shuffle a barrier across the warp's 32 threads around an exchange of
// values, atomicAdd a locked add. So the generated kernels run here exactly
// as written, at any grid and block size (a multiple of 32), and the tests
// launch them through the CUDA device's own launcher (runtime/cuda/Launch.h)
// and compare them with the CPU runtime's kernels.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_TEST_CUDA_EMULATION_H
#define KILN_TEST_CUDA_EMULATION_H

#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <math.h> // erff, expf, ... as CUDA names them
#include <mutex>
#include <pthread.h>
#include <stdexcept>
#include <string>
#include <thread>
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
/// A warp's meeting point for shuffles: its lanes' values and a barrier.
struct Warp {
  pthread_barrier_t barrier;
  unsigned char value[32][8];
};
inline Warp warps[32]; // up to 1024 threads
inline thread_local unsigned lane, warp;
inline std::mutex atomics;
} // namespace kiln_emulation

#define threadIdx kiln_emulation::thread_idx
#define blockIdx kiln_emulation::block_idx
#define blockDim kiln_emulation::block_dim
#define gridDim kiln_emulation::grid_dim

inline void __syncthreads() { pthread_barrier_wait(&kiln_emulation::barrier); }
inline float __int_as_float(int bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
/// The value of lane (this lane ^ mask): every lane of the warp calls it.
template <typename T> T __shfl_xor_sync(unsigned, T v, int mask) {
  namespace e = kiln_emulation;
  static_assert(sizeof(T) <= 8, "a shuffle moves at most 8 bytes");
  e::Warp &w = e::warps[e::warp];
  std::memcpy(w.value[e::lane], &v, sizeof v);
  pthread_barrier_wait(&w.barrier);
  T r;
  std::memcpy(&r, w.value[e::lane ^ static_cast<unsigned>(mask)], sizeof r);
  pthread_barrier_wait(&w.barrier);
  return r;
}
inline float atomicAdd(float *at, float v) {
  std::lock_guard<std::mutex> lock(kiln_emulation::atomics);
  float old = *at;
  *at = old + v;
  return old;
}

namespace kiln_emulation {
/// Host threads that stand for a block's CUDA threads, made once and kept:
/// thread t runs CUDA thread t of every block of every launch.
class Pool {
public:
  static Pool &get() {
    static Pool pool;
    return pool;
  }
  void run(void (*body)(const void *), const void *args, unsigned grid,
           unsigned block) {
    std::unique_lock<std::mutex> lock(mutex_);
    while (threads_.size() < block) {
      unsigned t = static_cast<unsigned>(threads_.size());
      threads_.emplace_back([this, t] { work(t); });
    }
    body_ = body;
    args_ = args;
    grid_ = grid;
    block_ = block;
    finished_ = 0;
    ++generation_;
    start_.notify_all();
    done_.wait(lock, [&] { return finished_ == block_; });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      ++generation_;
    }
    start_.notify_all();
    for (std::thread &t : threads_)
      t.join();
  }

private:
  void work(unsigned t) {
    uint64_t seen = 0;
    for (;;) {
      void (*body)(const void *);
      const void *args;
      unsigned grid, block;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        start_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_)
          return;
        body = body_;
        args = args_;
        grid = grid_;
        block = block_;
      }
      if (t >= block)
        continue;
      thread_idx = dim3(t);
      lane = t % 32;
      warp = t / 32;
      for (unsigned bx = 0; bx < grid; ++bx) {
        block_idx = dim3(bx);
        body(args);
        // Every thread is done with this block (and its shared memory)
        // before the next block starts.
        pthread_barrier_wait(&barrier);
      }
      std::lock_guard<std::mutex> lock(mutex_);
      if (++finished_ == block)
        done_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable start_, done_;
  std::vector<std::thread> threads_;
  void (*body_)(const void *) = nullptr;
  const void *args_ = nullptr;
  unsigned grid_ = 0, block_ = 0, finished_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};
} // namespace kiln_emulation

/// Runs `body` as the kernel over `grid` x `block` threads (one dimension
/// each, `block` a multiple of 32 up to 1024): blocks in turn, the threads
/// of a block at once (kiln_emulation::Pool's). One launch at a time.
inline void kilnLaunch(void (*body)(const void *), const void *args,
                       unsigned grid, unsigned block) {
  namespace e = kiln_emulation;
  if (block == 0 || block % 32 || block > 1024 || grid == 0)
    throw std::invalid_argument("kilnLaunch: bad launch shape");
  static std::mutex one;
  std::lock_guard<std::mutex> lock(one);
  e::grid_dim = dim3(grid);
  e::block_dim = dim3(block);
  pthread_barrier_init(&e::barrier, nullptr, block);
  for (unsigned w = 0; w < block / 32; ++w)
    pthread_barrier_init(&e::warps[w].barrier, nullptr, 32);
  e::Pool::get().run(body, args, grid, block);
  for (unsigned w = 0; w < block / 32; ++w)
    pthread_barrier_destroy(&e::warps[w].barrier);
  pthread_barrier_destroy(&e::barrier);
}

/// A kernel of a generated file: its trampoline unpacks the argument block.
struct KilnCudaEntry {
  const char *model, *name;
  void (*run)(const void *args);
};

namespace kiln_emulation {
inline std::vector<KilnCudaEntry> &entries() {
  static std::vector<KilnCudaEntry> all;
  return all;
}
/// The kernel `name` of `model`'s generated file, or null.
inline const KilnCudaEntry *find(const std::string &model,
                                 const std::string &name) {
  for (const KilnCudaEntry &k : entries())
    if (model == k.model && name == k.name)
      return &k;
  return nullptr;
}
} // namespace kiln_emulation

/// What a generated file ends with (under KILN_CUDA_EMULATION): its table
/// joins kiln_emulation::entries().
#define KILN_CUDA_REGISTER(table)                                              \
  static const bool kiln_cuda_registered_##table = [] {                        \
    for (const KilnCudaEntry *k = table; k->model; ++k)                        \
      kiln_emulation::entries().push_back(*k);                                 \
    return true;                                                               \
  }();

#endif
