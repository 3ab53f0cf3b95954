//===- QuantizeWeights.cpp - kiln-quantize-weights ------------------------===//
//
// Chooses which parameters are stored quantized (kiln compile --quantize=).
// Only the choice is made here, as attributes on kiln.parameter; the
// artifact writer quantizes the values (codegen/KartWriter.cpp, with the
// formats of runtime/quant/Formats.h) and the runtime's matmul kernels read
// the codes.
//
//===----------------------------------------------------------------------===//
#include "ir/KilnOps.h"
#include "passes/Passes.h"
#include "runtime/quant/QuantSpec.h"

#include "llvm/ADT/MapVector.h"
#include "llvm/Support/Debug.h"
#include "llvm/Support/GlobPattern.h"

#define DEBUG_TYPE "kiln-quantize-weights"

namespace kiln {
#define GEN_PASS_DEF_QUANTIZEWEIGHTS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

/// Where a parameter's value goes: nothing, or the first use that is not
/// the right-hand side of a matmul (what keeps it from being quantized).
Operation *otherUse(ParamOp read) {
  for (OpOperand &use : read.getResult().getUses()) {
    Operation *user = use.getOwner();
    if (isa<MatmulOp, FusedMatmulOp>(user) && use.getOperandNumber() == 1)
      continue;
    return user;
  }
  return nullptr;
}

struct QuantizeWeights : kiln::impl::QuantizeWeightsBase<QuantizeWeights> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto fail = [&](const Twine &msg) {
      module.emitError("kiln-quantize-weights: ") << msg;
      signalPassFailure();
    };
    runtime::quant::QuantSpec spec;
    std::string error;
    if (!runtime::quant::parseQuantSpec(format, spec, error))
      return fail(error);
    std::vector<llvm::GlobPattern> globs;
    for (const std::string &g : params) {
      llvm::Expected<llvm::GlobPattern> p = llvm::GlobPattern::create(g);
      if (!p)
        return fail("the parameter pattern '" + g +
                    "' is not a glob: " + llvm::toString(p.takeError()));
      globs.push_back(std::move(*p));
    }

    // Every read of every parameter, and the first that is not a matmul
    // weight's.
    llvm::MapVector<StringRef, Operation *> blocker;
    module.walk([&](ParamOp read) {
      Operation *&first = blocker[read.getName()];
      if (!first)
        first = otherUse(read);
    });

    StringAttr quant =
        StringAttr::get(&getContext(), runtime::quant::formatQuantSpec(spec));
    int64_t chosen = 0;
    for (ParameterOp p : module.getOps<ParameterOp>()) {
      StringRef name = p.getSymName();
      bool named = llvm::any_of(
          globs, [&](const llvm::GlobPattern &g) { return g.match(name); });
      if (!globs.empty() && !named)
        continue;
      auto type = llvm::cast<RankedTensorType>(p.getType());
      auto it = blocker.find(name);
      bool read = it != blocker.end();
      Operation *other = read ? it->second : nullptr;
      bool matrix = type.getRank() == 2 && type.getElementType().isF32();
      if (matrix && read && !other) {
        p.setQuantAttr(quant);
        p.setFrozen(true);
        ++chosen;
        LLVM_DEBUG(llvm::dbgs() << "quantizing " << name << " as "
                                << quant.getValue() << "\n");
        continue;
      }
      if (!named)
        continue; // by default, only what qualifies
      if (!matrix) {
        p.emitError("kiln-quantize-weights: parameter '")
            << name << "' is " << type
            << "; only f32 matrices that feed matmuls are quantized";
        return signalPassFailure();
      }
      if (!read) {
        p.emitError("kiln-quantize-weights: parameter '")
            << name << "' is not read by any function";
        return signalPassFailure();
      }
      InFlightDiagnostic d = other->emitError("kiln-quantize-weights: '")
                             << other->getName() << "' reads parameter '"
                             << name
                             << "'; quantized weights feed matmuls only (as "
                                "the right-hand side)";
      d.attachNote(p.getLoc()) << "the parameter is declared here";
      return signalPassFailure();
    }
    if (chosen == 0)
      return fail(globs.empty()
                      ? Twine("the model has no weight matrix that only "
                              "feeds matmuls, so nothing is quantized")
                      : Twine("no parameter matches the selection"));
  }
};

} // namespace
