//===- Device.cpp - running a kernel on a device --------------------------===//
#include "runtime/core/Device.h"

#include <cstdlib>
#include <string>

using namespace kiln;
using namespace kiln::runtime;

KernelChoice kiln::runtime::defaultKernelChoice() {
  static const KernelChoice choice = [] {
    const char *v = std::getenv("KILN_REFERENCE_KERNELS");
    return v && *v && std::string(v) != "0" ? KernelChoice::Reference
                                            : KernelChoice::Fast;
  }();
  return choice;
}

const Device *kiln::runtime::findDevice(kart::Device kind) {
  return kind == kart::Device::CPU ? &cpuDevice() : nullptr;
}

Status Device::run(KernelContext &ctx) const {
  const KernelImpl *impl = kernel(ctx.kernel.op());
  if (!impl)
    return Status::error(std::string(kart::EnumNameOp(ctx.kernel.op())) +
                         ": no kernel on this device");
  Status status = Status::ok();
  if (ctx.choice == KernelChoice::Fast && impl->fast && impl->fast(ctx, status))
    return status;
  return impl->reference(ctx);
}
