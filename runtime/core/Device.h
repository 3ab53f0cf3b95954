//===- Device.h - where kernels run, and the kernel registry ----*- C++ -*-===//
//
// A Device runs kernels: it maps each op to its implementations (the kernel
// registry, keyed by op and device) and chooses between the fast kernel and
// the naive reference one as a call asks (RunOptions::kernels). The CPU is
// the one device this runtime implements (cpu/CpuDevice.cpp); a CUDA device
// registers its own kernels the same way, and the loader refuses kernels
// for a device that is not here.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_CORE_DEVICE_H
#define KILN_RUNTIME_CORE_DEVICE_H

#include "runtime/Kernels.h"

namespace kiln::runtime {

/// The reference kernel of an op: plain loops, the meaning of the op.
using KernelFn = Status (*)(KernelContext &);
/// A fast kernel. It may decline a case it does not cover (returning false,
/// so the reference runs); when it runs it returns true and sets `status`
/// only on failure.
using FastKernelFn = bool (*)(KernelContext &, Status &status);

struct KernelImpl {
  kart::Op op;
  KernelFn reference; // always present
  FastKernelFn fast;  // null: the reference is the only kernel
};

class Device {
public:
  virtual ~Device() = default;
  virtual kart::Device kind() const = 0;
  /// The registry entry of `op` on this device, or null.
  virtual const KernelImpl *kernel(kart::Op op) const = 0;

  /// Runs one kernel: the fast implementation unless the context asks for
  /// the reference (or the fast one declines).
  Status run(KernelContext &ctx) const;
};

/// The device of that kind in this runtime, or null.
const Device *findDevice(kart::Device kind);
const Device &cpuDevice();

} // namespace kiln::runtime

#endif
