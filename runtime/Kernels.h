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
//   FusedMatmul      in [a, b, bias|-1, residual|-1]
//                    ints [transpose_a, transpose_b, reduce_batch],
//                    floats [scale], text activation
//   AddNorm          in [x, residual, w, b|-1] out [sum, y]
//                    floats [eps], text "layernorm" | "rmsnorm"
//   NormGrad         in [grad, x, w] out [dx, dw, db]  floats [eps], text kind
//   SoftmaxCrossEntropy in [logits, targets, upstream] out [loss, dlogits]
//                    ints [ignore_index]
//   FusedElementwise in [x...]  floats = constants, ints = the program
//                    [count, (op, variant, a, b) x count, result]: registers
//                    are the inputs, the constants, then one per
//                    instruction; op is a kart::Op among Add..Gelu and
//                    ActivationGrad, variant the Gelu form (1 = tanh) or the
//                    activation_grad kind (relu, gelu, gelu_tanh, silu =
//                    0..3), b = -1 for unary ops
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
  int floats; // exact count; -1: any
  int dims;
  bool text;
  /// In place: output `inPlaceOutput` may take over the storage of input
  /// `inPlaceInput` when nothing later reads that input (-1: never).
  int inPlaceInput = -1, inPlaceOutput = 0;
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
class PackedWeights;

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
  /// For weight prepacking: the parameter each input is (-1 if none), the
  /// parameters' versions (bumped whenever they may have changed) and the
  /// model's store of reordered copies.
  std::vector<int64_t> inParams;
  const std::vector<uint64_t> *paramVersions = nullptr;
  PackedWeights *packed = nullptr;
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

/// Weights reordered into the layout oneDNN's matmul prefers, one copy per
/// parameter and layout, shared by every function of a model. A copy is
/// made when a second call reads a parameter at the same version (so
/// inference packs once, while training, which changes the weights every
/// step, keeps reading them in place) and used until the version changes.
/// KILN_PREPACK=0 turns packing off.
class PackedWeights {
public:
  PackedWeights();
  ~PackedWeights();
  struct Impl;
  Impl &impl() { return *impl_; }
  /// Bytes held by packed copies.
  size_t bytes() const;
  /// Marks the start of a call (packing waits for a second call).
  void beginRun();

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

/// Checks every target of a cross-entropy kernel (in[1]) against the class
/// count `V`; `counted` is how many are not `ignore`.
Status countTargets(const KernelContext &c, int64_t rows, int64_t V,
                    int64_t ignore, int64_t &counted);

/// Blocked (flash) attention and its backward (runtime/Attention.cpp); the
/// backward takes no bias (the per-row kernel in Kernels.cpp handles it).
Status flashAttention(KernelContext &ctx);
Status flashAttentionGrad(KernelContext &ctx);

/// One row of softmax cross-entropy: writes (softmax(x) - onehot(t)) *
/// scale to `d` (which may be `x` itself) and returns the row's loss term,
/// logsumexp(x) - x[t].
double crossEntropyRow(const float *x, float *d, int64_t V, int64_t t,
                       float scale);

/// Output shapes of the fused ops (FusedMatmul .. FusedElementwise).
Status inferFusedShapes(const kart::Kernel &k,
                        const std::vector<const std::vector<int64_t> *> &in,
                        std::vector<std::vector<int64_t>> &out);

/// What load-time verification knows of an operand of a fused kernel.
struct FusedOperand {
  bool present = false;
  bool f32 = false, integer = false;
  int64_t rank = 0;
};

/// Checks a fused kernel's operands and attributes when an artifact loads
/// (the elementwise program's registers and op codes included); returns
/// why it is invalid, or "" when it is valid.
std::string checkFusedKernel(const kart::Kernel &k,
                             const std::vector<FusedOperand> &in,
                             const std::vector<FusedOperand> &out);

/// Runs AddNorm, NormGrad, SoftmaxCrossEntropy and FusedElementwise.
Status executeFused(KernelContext &ctx);

/// The naive FusedMatmul that the oneDNN post-op path is checked against.
Status fusedMatmulReference(KernelContext &ctx);

/// Evaluates a kart::Dim with the bound symbols.
int64_t evalDim(const kart::Dim *d, const std::vector<int64_t> &symbols);

} // namespace kiln::runtime

#endif
