//===- Kernels.h - CPU kernels and their run-time shape rules ---*- C++ -*-===//
//
// Each kart::Op is declared once in the op table (core/OpTable.h): its
// operands, results, flags, attribute table (runtime/schema/kart.fbs) and
// rules. This header is the CPU side: the context a kernel runs in, the
// executor's entry points and the helpers the kernel files share.
//
// Operand conventions the kernels rely on ("like" operands only supply
// shapes; -1 marks an absent optional operand):
//
//   Attention        in [q, k, v, mask|-1, bias|-1] out [y, lse?]
//   AttentionGrad    in [grad, q, k, v, out, lse, mask|-1, bias|-1]
//                    out [dq, dk, dv, dbias?]
//   CachedAttention  in [q, k, v, key_cache, value_cache, positions, lengths,
//                    relative_bias|-1] out [y]; writes the caches (function
//                    inputs)
//   Rope             in [x, positions|-1]
//   FusedMatmul      in [a, b, bias|-1, residual|-1]
//   AddNorm          in [x, residual, w, b|-1] out [sum, y]
//   NormGrad         in [grad, x, w] out [dx, dw, db]
//   SoftmaxCrossEntropy in [logits, targets, upstream] out [loss, dlogits]
//   OptimizerUpdate  in [param, grad, grad_norm, lr, step] out []; writes
//                    the parameter
//   ConcatGrad       in [grad, like...] out [piece...]
//
// In training (see KernelContext) Dropout draws its mask; otherwise it is
// the identity.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_KERNELS_H
#define KILN_RUNTIME_KERNELS_H

#include "runtime/Model.h"
#include "runtime/Optimizer.h"
#include "runtime/Tensor.h"
#include "runtime/core/OpTable.h"
#include "runtime/kart_generated.h"

#include <memory>
#include <string>
#include <vector>

namespace kiln::runtime {

/// A tensor the executor hands to a kernel: contiguous, row-major.
namespace quant {
struct QuantView;
}

struct View {
  void *data = nullptr;
  DType dtype = DType::F32;
  const std::vector<int64_t> *shape = nullptr;
  /// Set for a quantized parameter: `data` then holds its codes, and only
  /// the kernels that take quantized operands (matmuls' right-hand sides)
  /// ever see one (the loader checks).
  const quant::QuantView *quant = nullptr;
  int64_t numel() const;
  template <typename T> T *as() const { return static_cast<T *>(data); }
};

class PrimitiveCache;
class Workspace;
class PackedWeights;

struct KernelContext {
  const kart::Kernel &kernel;
  std::vector<View> in; // absent optional operands have data == nullptr
  std::vector<View> out;
  const std::vector<int64_t> &symbols; // bound symbolic dimension sizes
  PrimitiveCache &primitives;
  /// Scratch memory that outlives the call (the function state's): a
  /// kernel that needs a large temporary takes it here instead of
  /// allocating, and touching, fresh memory every call.
  Workspace *workspace = nullptr;
  bool training = false; // dropout draws its mask
  KernelChoice choice = KernelChoice::Fast;
  uint64_t seed = 0;     // the run's dropout seed (set per training step)
  OptimizerState *optimizer = nullptr; // for OptimizerUpdate
  int64_t paramIndex = -1;             // the parameter OptimizerUpdate writes
  bool paramFrozen = false;            // ... and it is not trainable
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

/// For a reduction over `axes` of a rank-`rank` input: true
/// when the reduced axes form one contiguous block [first, last], which
/// kiln's blocked reduction kernel handles (oneDNN takes the others).
bool reducedBlock(const flatbuffers::Vector<int64_t> &axes, size_t rank,
                  int64_t &first, int64_t &last);

/// Scratch memory a function state keeps between calls. `floats(n)` returns
/// at least n floats of unspecified contents, valid until the next
/// `floats` call on the same workspace (one kernel runs at a time per
/// state; a kernel's threads share the one buffer).
class Workspace {
public:
  float *floats(size_t n) {
    if (size_ < n) {
      buffer_.reset(new float[n]);
      size_ = n;
    }
    return buffer_.get();
  }

private:
  std::unique_ptr<float[]> buffer_;
  size_t size_ = 0;
};

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

/// The kernels a call runs when it does not say: the reference kernels
/// when KILN_REFERENCE_KERNELS is set (a switch for whole programs, such as
/// the CLI under test), the fast ones otherwise.
KernelChoice defaultKernelChoice();

/// Checks every target of a cross-entropy kernel (in[1]) against the class
/// count `V`; `counted` is how many are not `ignore`.
Status countTargets(const KernelContext &c, int64_t rows, int64_t V,
                    int64_t ignore, int64_t &counted);

/// Blocked (flash) attention and its backward (attention/Flash.cpp); the
/// backward takes no bias (the per-row reference kernel handles it).
Status flashAttention(KernelContext &ctx);
Status flashAttentionGrad(KernelContext &ctx);
/// kiln.cached_attention: the row-by-row reference, and the fast path for
/// prompts into an empty cache (flash attention), which declines the rest.
Status cachedAttentionReference(KernelContext &ctx);
bool cachedAttention(KernelContext &ctx, Status &status);

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
/// GELU, exact (erf) or its tanh approximation, as the kernels compute it.
float geluOf(float x, bool tanhForm);

/// GELU, exact (erf) or the tanh approximation, as the fused kernels apply
/// it.
float gelu(float x, bool tanhForm);

/// Whether input `input` of a kernel of `op` may be a quantized weight: a
/// matmul's right-hand side (runtime/quant/QuantMatmul.cpp) or an
/// embedding's table (its gathered rows dequantized). The compiler's
/// kiln-quantize-weights pass selects by the same rule.
inline bool readsQuantizedWeight(kart::Op op, size_t input) {
  return ((op == kart::Op::Matmul || op == kart::Op::FusedMatmul) &&
          input == 1) ||
         (op == kart::Op::Embedding && input == 0);
}

/// Matmul and FusedMatmul with a quantized right-hand side (View::quant):
/// tiles dequantized in cache (runtime/quant/QuantMatmul.cpp), and the
/// oracle, which dequantizes the whole weight and runs `dense` on it.
Status quantizedMatmul(KernelContext &ctx);
Status quantizedMatmulReference(KernelContext &ctx,
                                Status (*dense)(KernelContext &));

/// Evaluates a kart::Dim with the bound symbols.
int64_t evalDim(const kart::Dim *d, const std::vector<int64_t> &symbols);

} // namespace kiln::runtime

#endif
