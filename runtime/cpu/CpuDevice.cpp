//===- CpuDevice.cpp - the CPU device and its kernel registry -------------===//
//
// One registry row per op, in kart::Op order: the reference kernel that
// defines it and, where one exists, the fast kernel (a oneDNN primitive, the
// blocked flash attention). Data movement (reshape, slice, concat, split and
// their gradients) has one kernel, which is both.
//
//===----------------------------------------------------------------------===//
#include "runtime/core/Device.h"
#include "runtime/cpu/KernelUtil.h"

#include <cstring>
#include <iterator>

using namespace kiln;
using namespace kiln::runtime;
using namespace kiln::runtime::cpu;
using namespace kiln::runtime::cpu::reference;
using kart::Op;

namespace {

Status identity(KernelContext &c) {
  if (c.out[0].data != c.in[0].data)
    std::memcpy(c.out[0].data, c.in[0].data,
                c.in[0].numel() * dtypeSize(c.in[0].dtype));
  return Status::ok();
}

/// Dropout draws its mask in training and is the identity otherwise.
Status dropout(KernelContext &c) {
  if (c.training && c.kernel.attrs_as_DropoutAttrs()->rate() > 0)
    return dropoutTraining(c);
  return identity(c);
}

Status slice(KernelContext &c) {
  const kart::SliceAttrs *a = c.kernel.attrs_as_SliceAttrs();
  int64_t axis = normAxis(a->axis(), c.in[0].shape->size());
  copyAxis(c.in[0], a->start(), c.out[0], 0, (*c.out[0].shape)[axis], axis);
  return Status::ok();
}

Status concat(KernelContext &c) {
  int64_t axis = normAxis(c.kernel.attrs_as_AxisAttrs()->axis(),
                          c.out[0].shape->size()),
          at = 0;
  for (const View &in : c.in) {
    copyAxis(in, 0, c.out[0], at, (*in.shape)[axis], axis);
    at += (*in.shape)[axis];
  }
  return Status::ok();
}

/// Split, and ConcatGrad (the gradient's pieces): in[0] cut along the axis
/// into the outputs.
Status split(KernelContext &c) {
  int64_t axis = normAxis(c.kernel.attrs_as_AxisAttrs()->axis(),
                          c.in[0].shape->size()),
          at = 0;
  for (const View &out : c.out) {
    copyAxis(c.in[0], at, out, 0, (*out.shape)[axis], axis);
    at += (*out.shape)[axis];
  }
  return Status::ok();
}

Status zerosLike(KernelContext &c) {
  std::memset(c.out[0].data, 0, c.out[0].numel() * dtypeSize(c.out[0].dtype));
  return Status::ok();
}

Status sliceGrad(KernelContext &c) {
  const kart::SliceGradAttrs *a = c.kernel.attrs_as_SliceGradAttrs();
  int64_t axis = normAxis(a->axis(), c.out[0].shape->size());
  zerosLike(c);
  copyAxis(c.in[0], 0, c.out[0], a->start(), (*c.in[0].shape)[axis], axis);
  return Status::ok();
}

// Matmuls whose right-hand side is a quantized weight take their own
// kernels (runtime/quant/QuantMatmul.cpp), fast and reference alike.
Status matmulOrQuantized(KernelContext &c) {
  return c.in[1].quant ? quantizedMatmulReference(c, matmulReference)
                       : matmulReference(c);
}

Status fusedMatmulOrQuantized(KernelContext &c) {
  return c.in[1].quant ? quantizedMatmulReference(c, fusedMatmulReference)
                       : fusedMatmulReference(c);
}

bool matmulFast(KernelContext &c, Status &s) {
  if (skinnyMatmul(c, s))
    return true;
  if (!c.in[1].quant)
    return onednnMatmul(c, s);
  s = quantizedMatmul(c);
  return true;
}

/// Elementwise ops on a decoding step's few values run on the calling
/// thread (the reference loop); oneDNN's primitives take the rest.
bool binaryFast(KernelContext &c, Status &s) {
  return c.out[0].numel() >= kParallelWork && onednnBinary(c, s);
}
bool eltwiseFast(KernelContext &c, Status &s) {
  return c.out[0].numel() >= kParallelWork && onednnEltwise(c, s);
}

bool flash(KernelContext &c, Status &s) {
  s = flashAttention(c);
  return true;
}

/// The blocked backward takes no bias; the per-row reference handles it.
bool flashGrad(KernelContext &c, Status &s) {
  if (c.in[7].data)
    return false;
  s = flashAttentionGrad(c);
  return true;
}

// clang-format off
constexpr KernelImpl kCpuKernels[] = {
    {Op::Embedding,              embedding,              nullptr},
    {Op::Matmul,                 matmulOrQuantized,      matmulFast},
    {Op::Add,                    binary,                 binaryFast},
    {Op::Sub,                    binary,                 binaryFast},
    {Op::Mul,                    binary,                 binaryFast},
    {Op::Div,                    binary,                 binaryFast},
    {Op::Max,                    binary,                 binaryFast},
    {Op::Min,                    binary,                 binaryFast},
    {Op::Pow,                    binary,                 nullptr},
    {Op::Neg,                    unary,                  eltwiseFast},
    {Op::Exp,                    unary,                  eltwiseFast},
    {Op::Log,                    unary,                  eltwiseFast},
    {Op::Sqrt,                   unary,                  eltwiseFast},
    {Op::Rsqrt,                  unary,                  eltwiseFast},
    {Op::Tanh,                   unary,                  eltwiseFast},
    {Op::Sigmoid,                unary,                  eltwiseFast},
    {Op::Relu,                   unary,                  eltwiseFast},
    {Op::Silu,                   unary,                  eltwiseFast},
    {Op::Gelu,                   unary,                  eltwiseFast},
    {Op::Cast,                   cast,                   nullptr},
    {Op::Reshape,                identity,               nullptr},
    {Op::Transpose,              reference::transpose,   onednnTranspose},
    {Op::Slice,                  slice,                  nullptr},
    {Op::Concat,                 concat,                 nullptr},
    {Op::Split,                  split,                  nullptr},
    {Op::ReduceSum,              reduce,                 onednnReduction},
    {Op::ReduceMean,             reduce,                 onednnReduction},
    {Op::ReduceMax,              reduce,                 onednnReduction},
    {Op::LayerNorm,              norm,                   onednnLayerNorm},
    {Op::RMSNorm,                norm,                   nullptr},
    {Op::Softmax,                reference::softmax,     onednnSoftmax},
    {Op::Dropout,                dropout,                dropoutTrainingFast},
    {Op::Rope,                   rope,                   nullptr},
    {Op::Attention,              attentionReference,     flash},
    {Op::RelativePositionBucket, relativePositionBucket, nullptr},
    {Op::CrossEntropy,           crossEntropy,           nullptr},
    {Op::CrossEntropyGrad,       crossEntropyGrad,       nullptr},
    {Op::EmbeddingGrad,          embeddingGrad,          nullptr},
    {Op::ActivationGrad,         activationGrad,         onednnActivationGrad},
    {Op::SliceGrad,              sliceGrad,              nullptr},
    {Op::ReshapeLike,            identity,               nullptr},
    {Op::ZerosLike,              zerosLike,              nullptr},
    {Op::ReduceGrad,             reduceGrad,             nullptr},
    {Op::ConcatGrad,             split,                  nullptr},
    {Op::AttentionGrad,          attentionGrad,          flashGrad},
    {Op::GlobalNorm,             globalNorm,             nullptr},
    {Op::OptimizerUpdate,        optimizerUpdate,        nullptr},
    {Op::FusedMatmul,            fusedMatmulOrQuantized, matmulFast},
    {Op::AddNorm,                executeFused,           nullptr},
    {Op::NormGrad,               executeFused,           nullptr},
    {Op::SoftmaxCrossEntropy,    executeFused,           nullptr},
    {Op::FusedElementwise,       executeFused,           nullptr},
    {Op::CachedAttention,        cachedAttentionReference, cachedAttention},
};
// clang-format on

static_assert(oneRowPerOp(kCpuKernels),
              "the CPU registry needs one row per kart::Op, in enum order");

class CpuDevice final : public Device {
public:
  kart::Device kind() const override { return kart::Device::CPU; }
  const KernelImpl *kernel(Op op) const override {
    auto i = static_cast<size_t>(op);
    return i < std::size(kCpuKernels) ? &kCpuKernels[i] : nullptr;
  }
};

} // namespace

const Device &kiln::runtime::cpuDevice() {
  static const CpuDevice cpu;
  return cpu;
}
