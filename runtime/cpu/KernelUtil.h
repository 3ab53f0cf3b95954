//===- KernelUtil.h - helpers shared by the CPU kernels ---------*- C++ -*-===//
//
// Internal to the runtime: shapes in messages, kernel attributes, NumPy
// broadcasting, index reads, and the training kernels the dispatcher in
// Kernels.cpp calls (GradKernels.cpp).
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_CPU_KERNELUTIL_H
#define KILN_RUNTIME_CPU_KERNELUTIL_H

#include "runtime/Kernels.h"
#include "runtime/attention/KartPattern.h"
#include "runtime/attention/Pattern.h"

#include <algorithm>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

namespace kiln::runtime::cpu {

/// Work (values touched) below which a kernel runs on the calling thread:
/// waking the pool's sleeping threads costs tens of microseconds, more
/// than a decoding step's norm or attention near the start takes.
constexpr int64_t kParallelWork = int64_t(1) << 16;

using Shape = std::vector<int64_t>;

inline std::string str(const Shape &s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i)
    r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

inline Status fail(const kart::Kernel &k, const std::string &msg) {
  std::string where = k.location() ? k.location()->str() : std::string();
  return Status::error((where.empty() ? "" : where + ": ") +
                       kart::EnumNameOp(k.op()) + ": " + msg);
}

inline int64_t numelOf(const Shape &s) {
  return std::accumulate(s.begin(), s.end(), int64_t(1),
                         std::multiplies<int64_t>());
}

inline int64_t normAxis(int64_t axis, int64_t rank) {
  return axis < 0 ? axis + rank : axis;
}

inline bool broadcast(const Shape &a, const Shape &b, Shape &out) {
  size_t r = std::max(a.size(), b.size());
  out.assign(r, 1);
  for (size_t i = 0; i < r; ++i) {
    int64_t da = i < a.size() ? a[a.size() - 1 - i] : 1;
    int64_t db = i < b.size() ? b[b.size() - 1 - i] : 1;
    if (da != db && da != 1 && db != 1)
      return false;
    out[r - 1 - i] = da == 1 ? db : da;
  }
  return true;
}

/// Row-major strides of `shape` aligned to an output of rank `rank`, with 0
/// for broadcast dimensions.
inline std::vector<int64_t> broadcastStrides(const Shape &shape,
                                             const Shape &out) {
  std::vector<int64_t> st(out.size(), 0);
  int64_t s = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    size_t oi = out.size() - 1 - i;
    size_t si = shape.size() - 1 - i;
    st[oi] = shape[si] == 1 ? 0 : s;
    s *= shape[si];
  }
  return st;
}

inline int64_t index(const View &ids, int64_t i) {
  return ids.dtype == DType::I32 ? ids.as<int32_t>()[i] : ids.as<int64_t>()[i];
}

template <typename T> inline T readAs(const View &v, int64_t i) {
  switch (v.dtype) {
  case DType::F32:
    return static_cast<T>(v.as<float>()[i]);
  case DType::F64:
    return static_cast<T>(v.as<double>()[i]);
  case DType::I32:
    return static_cast<T>(v.as<int32_t>()[i]);
  case DType::I64:
    return static_cast<T>(v.as<int64_t>()[i]);
  case DType::Bool:
    return static_cast<T>(v.as<uint8_t>()[i] != 0);
  default:
    return T();
  }
}

/// That pattern bound to Tq queries and Tk keys: the one place the kernels
/// read it.
inline attention::Pattern attentionPattern(const kart::Kernel &k, int64_t Tq,
                                           int64_t Tk) {
  return attention::Pattern(
      attention::specOf(*k.attrs_as_AttentionAttrs()->pattern()), Tq, Tk,
      k.attrs_as_AttentionAttrs()->heads());
}

/// The reference attention kernels' visibility: the pattern for head h
/// (attention/Pattern.h) and the key mask of batch row `b`.
inline bool referenceVisible(const attention::Pattern &pattern,
                             const View &mask, int64_t b, int64_t h, int64_t Tk,
                             int64_t i, int64_t j) {
  return pattern.visible(h, i, j) &&
         (!mask.data || readAs<double>(mask, b * Tk + j) != 0);
}

/// scale * q_i . k_j, plus the broadcast bias of (b, h, i, j) if any.
inline float referenceScore(const float *qi, const float *kj, int64_t D,
                            float scale, const View &bias,
                            const std::vector<int64_t> &bst, int64_t b,
                            int64_t h, int64_t i, int64_t j) {
  float dot = 0;
  for (int64_t d = 0; d < D; ++d)
    dot += qi[d] * kj[d];
  dot *= scale;
  if (bias.data)
    dot += bias.as<float>()[b * bst[0] + h * bst[1] + i * bst[2] + j * bst[3]];
  return dot;
}

/// What a Matmul or FusedMatmul kernel asks for (its attributes read in
/// one place): transposes, reduce_batch, and the fused epilogue (null for a
/// plain Matmul).
struct MatmulForm {
  bool ta = false, tb = false, reduceBatch = false;
  const kart::FusedMatmulAttrs *fused = nullptr;
};
inline MatmulForm matmulForm(const kart::Kernel &k) {
  MatmulForm f;
  if (k.op() == kart::Op::FusedMatmul) {
    f.fused = k.attrs_as_FusedMatmulAttrs();
    f.ta = f.fused->transpose_a();
    f.tb = f.fused->transpose_b();
    f.reduceBatch = f.fused->reduce_batch();
  } else {
    f.ta = k.attrs_as_MatmulAttrs()->transpose_a();
    f.tb = k.attrs_as_MatmulAttrs()->transpose_b();
  }
  return f;
}

/// The most rows of x that skinnyMatmul takes: at batch 8 a decoding step
/// turns compute-bound, and oneDNN's GEMM is faster there.
constexpr int64_t kSkinnyRows = 4;
/// x[M, K] @ W[N, K]^T for M <= kSkinnyRows (SkinnyMatmul.cpp): false when
/// the matmul is not of that form.
bool skinnyMatmul(KernelContext &c, Status &s);

// Reference kernels (Kernels.cpp): the meaning of each op, in plain loops.
namespace reference {
Status matmulReference(KernelContext &c);
Status binary(KernelContext &c);
Status unary(KernelContext &c);
Status cast(KernelContext &c);
Status embedding(KernelContext &c);
Status transpose(KernelContext &c);
Status reduce(KernelContext &c);
Status norm(KernelContext &c);
Status softmax(KernelContext &c);
Status rope(KernelContext &c);
Status attentionReference(KernelContext &c);
Status relativePositionBucket(KernelContext &c);
Status crossEntropy(KernelContext &c);
Status crossEntropyGrad(KernelContext &c);
/// Copies `count` entries along `axis` between [outer, axis, inner] views
/// (slice, concat, split and their gradients).
void copyAxis(const View &from, int64_t fromStart, const View &to,
              int64_t toStart, int64_t count, int64_t axis);
} // namespace reference

// oneDNN primitives (OneDNN.cpp) as fast kernels: each declines what it
// does not cover (and empty results), and reports oneDNN's own errors.
bool onednnMatmul(KernelContext &c, Status &s);
bool onednnEltwise(KernelContext &c, Status &s);
bool onednnBinary(KernelContext &c, Status &s);
bool onednnSoftmax(KernelContext &c, Status &s);
bool onednnLayerNorm(KernelContext &c, Status &s);
bool onednnReduction(KernelContext &c, Status &s);
bool onednnTranspose(KernelContext &c, Status &s);
bool onednnActivationGrad(KernelContext &c, Status &s);

// Training kernels (GradKernels.cpp).
Status dropoutTraining(KernelContext &c);
bool dropoutTrainingFast(KernelContext &c, Status &s);
/// The smallest k (a draw's top 53 bits, SplitMix64::next() >> 11) whose
/// SplitMix64::uniform() is not below `rate`. uniform() never falls as k
/// rises, so "uniform() < rate" is "k < this": the fast dropout kernel's
/// integer comparison drops exactly the reference's elements.
uint64_t dropoutThreshold(double rate);
Status embeddingGrad(KernelContext &c);
Status activationGrad(KernelContext &c);
Status reduceGrad(KernelContext &c);
Status attentionGrad(KernelContext &c);
Status globalNorm(KernelContext &c);
Status optimizerUpdate(KernelContext &c);

} // namespace kiln::runtime::cpu

#endif
