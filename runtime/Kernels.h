//===- Kernels.h - CPU kernels and their run-time shape rules ---*- C++ -*-===//
//
// Each kart::Op has a signature (operand counts, which generic attribute
// fields it uses), a shape rule evaluated when a call binds its symbolic
// dimensions, and a CPU implementation. Attribute conventions:
//
//   Embedding        in [table, ids]
//   Matmul           in [a, b]            ints [transpose_a, transpose_b]
//   Add..Pow         in [a, b]            (NumPy broadcasting)
//   Neg..Silu        in [x]
//   Gelu             in [x]               text "none" | "tanh"
//   Cast             in [x]               (output dtype from its value)
//   Reshape          in [x]               dims = target shape
//   Transpose        in [x]               ints = perm
//   Slice            in [x]               ints [axis, start], dims [end]
//   Concat           in [x...]            ints [axis]
//   Split            in [x] out [y...]    ints [axis]
//   Reduce*          in [x]               ints [keepdim, axes...]
//   LayerNorm        in [x, w, b]         floats [eps]
//   RMSNorm          in [x, w]            floats [eps]
//   Softmax          in [x]               ints [axis]
//   Dropout          in [x]               ints [seed], floats [rate]
//   Rope             in [x, pos|-1]       ints [head_dim], floats [theta],
//                                         text "interleaved" | "half"
//   Attention        in [q, k, v, mask|-1, bias|-1]
//                                         ints [heads, kv_heads, causal],
//                                         floats [scale]
//   RelativePositionBucket in [q, k]      ints [bidirectional, buckets, max]
//   CrossEntropy     in [logits, targets] ints [ignore_index]
//   CrossEntropyGrad in [logits, targets, upstream] ints [ignore_index]
//   EmbeddingGrad    in [grad, ids]       ints [num_embeddings]
//   ActivationGrad   in [grad, x]         text "relu" | "gelu" | "gelu_tanh"
//                                         | "silu"
//   SliceGrad        in [grad, like]      ints [axis, start]
//   ReshapeLike      in [x, like]
//   ZerosLike        in [like]
//   ReduceGrad       in [grad, x]         ints [keepdim, axes...],
//                                         text "sum" | "mean" | "max"
//   ConcatGrad       in [grad, like...] out [piece...]   ints [axis]
//   GlobalNorm       in [x...]            (out: rank-0 f32)
//   OptimizerUpdate  in [param, grad, grad_norm, lr, step] out []
//                    text "adamw" | "sgd", floats [beta1, beta2, eps,
//                    weight_decay, momentum, max_norm]; writes the parameter
//   AttentionGrad    in [grad, q, k, v, out, lse, mask|-1, bias|-1]
//                    out [dq, dk, dv, dbias?]   ints/floats as Attention
//
// Attention may have a second output, lse [B, H, Tq]; Rope a second int,
// `inverse`. "like" operands only supply shapes. In training (see
// KernelContext) Dropout draws its mask; otherwise it is the identity.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_KERNELS_H
#define KILN_RUNTIME_KERNELS_H

#include "runtime/Optimizer.h"
#include "runtime/Tensor.h"
#include "runtime/kart_generated.h"

#include <memory>
#include <string>
#include <vector>

namespace kiln::runtime {

/// Elementwise ops with NumPy broadcasting (Add .. Pow).
inline bool isBinary(kart::Op op) {
  return op >= kart::Op::Add && op <= kart::Op::Pow;
}
/// Elementwise f32 activations and math functions (Neg .. Gelu).
inline bool isUnary(kart::Op op) {
  return op >= kart::Op::Neg && op <= kart::Op::Gelu;
}

/// What load-time verification checks for each op.
struct OpSignature {
  int minInputs, maxInputs; // -1: any number >= minInputs
  int outputs;              // -1: any number >= 1; 0: none
  int ints;                 // exact count; -1: at least `minInts`
  int minInts;
  int floats;
  int dims;
  bool text;
};
const OpSignature &signatureOf(kart::Op op);

/// A tensor the executor hands to a kernel: contiguous, row-major.
struct View {
  void *data = nullptr;
  DType dtype = DType::F32;
  const std::vector<int64_t> *shape = nullptr;
  int64_t numel() const;
  template <typename T> T *as() const { return static_cast<T *>(data); }
};

class PrimitiveCache;

struct KernelContext {
  const kart::Kernel &kernel;
  std::vector<View> in; // absent optional operands have data == nullptr
  std::vector<View> out;
  const std::vector<int64_t> &symbols; // bound symbolic dimension sizes
  PrimitiveCache &primitives;
  bool training = false; // dropout draws its mask
  uint64_t seed = 0;     // the run's dropout seed (set per training step)
  OptimizerState *optimizer = nullptr; // for OptimizerUpdate
  int64_t paramIndex = -1;             // the parameter OptimizerUpdate writes
};

/// Computes output shapes from input shapes and the bound symbols, checking
/// the run-time sizes the kernel relies on. Reports mismatches with the
/// kernel's source location.
Status inferShapes(const kart::Kernel &k,
                   const std::vector<const std::vector<int64_t> *> &inShapes,
                   const std::vector<int64_t> &symbols,
                   std::vector<std::vector<int64_t>> &outShapes);

/// For a reduction (ints [keepdim, axes...]) of a rank-`rank` input: true
/// when the reduced axes form one contiguous block [first, last], which
/// kiln's blocked reduction kernel handles (oneDNN takes the others).
bool reducedBlock(const kart::Kernel &k, size_t rank, int64_t &first,
                  int64_t &last);

/// Runs one kernel. Run-time data errors (an id out of range) are reported,
/// not undefined behaviour.
Status execute(KernelContext &ctx);

/// oneDNN primitives, created once per op, attributes and shapes and reused
/// by every later call.
class PrimitiveCache {
public:
  PrimitiveCache();
  ~PrimitiveCache();
  struct Impl;
  Impl &impl() { return *impl_; }

private:
  std::unique_ptr<Impl> impl_;
};

/// Runs the kernel as a oneDNN primitive when oneDNN has one for it (matmul,
/// eltwise, binary, softmax, layer normalization, reduction, transpose as
/// reorder).
/// Returns false when the op or its operands need the reference kernel.
bool executeOneDNN(KernelContext &ctx, Status &status);

/// True when KILN_REFERENCE_KERNELS is set: every op then runs its naive
/// reference kernel, which the tests compare with the fast path.
bool useReferenceKernels();

/// Evaluates a kart::Dim with the bound symbols.
int64_t evalDim(const kart::Dim *d, const std::vector<int64_t> &symbols);

} // namespace kiln::runtime

#endif
