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
#include "llvm/ADT/StringSet.h"
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

/// Whether `use` reads a weight as the runtime's quantized kernels can: a
/// matmul's right-hand side, or an embedding's table (rows dequantized as
/// they are gathered). runtime/Kernels.h's readsQuantizedWeight is
/// the runtime's side of the same rule.
bool quantizedRead(OpOperand &use, bool embeddings) {
  Operation *user = use.getOwner();
  if (isa<MatmulOp, FusedMatmulOp>(user) && use.getOperandNumber() == 1)
    return true;
  return embeddings && isa<EmbeddingOp>(user) && use.getOperandNumber() == 0;
}

/// The first use of a parameter read that is not a quantized read: nothing
/// when every use is one. By default only matmuls' weights are chosen (so
/// not embeddings or a tied output projection); a parameter named by the
/// selection may be an embedding table too.
Operation *otherUse(ParamOp read, bool embeddings) {
  for (OpOperand &use : read.getResult().getUses())
    if (!quantizedRead(use, embeddings))
      return use.getOwner();
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
    // Exact names must be quantizable; wildcard patterns pick what is.
    std::vector<llvm::GlobPattern> globs;
    llvm::StringSet<> exact;
    for (const std::string &g : params) {
      if (g.find_first_of("*?[\\") == std::string::npos)
        exact.insert(g);
      llvm::Expected<llvm::GlobPattern> p = llvm::GlobPattern::create(g);
      if (!p)
        return fail("the parameter pattern '" + g +
                    "' is not a glob: " + llvm::toString(p.takeError()));
      globs.push_back(std::move(*p));
    }

    // Every read of every parameter, and the first that is not a matmul
    // weight's (byDefault) or not a quantized kernel's (named).
    llvm::MapVector<StringRef, std::pair<Operation *, Operation *>> blocker;
    module.walk([&](ParamOp read) {
      auto &[byDefault, named] = blocker[read.getName()];
      if (!byDefault)
        byDefault = otherUse(read, /*embeddings=*/false);
      if (!named)
        named = otherUse(read, /*embeddings=*/true);
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
      bool mustQuantize = exact.contains(name);
      auto type = llvm::cast<RankedTensorType>(p.getType());
      auto it = blocker.find(name);
      bool read = it != blocker.end();
      Operation *other = !read   ? nullptr
                         : named ? it->second.second
                                 : it->second.first;
      bool matrix = type.getRank() == 2 && type.getElementType().isF32();
      if (matrix && read && !other) {
        p.setQuantAttr(quant);
        p.setFrozen(true);
        ++chosen;
        LLVM_DEBUG(llvm::dbgs() << "quantizing " << name << " as "
                                << quant.getValue() << "\n");
        continue;
      }
      if (!mustQuantize)
        continue; // by default and by wildcard, only what qualifies
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
                             << "'; quantized weights feed matmuls (as the "
                                "right-hand side) and embeddings only";
      d.attachNote(p.getLoc()) << "the parameter is declared here";
      return signalPassFailure();
    }
    if (chosen == 0)
      return fail(globs.empty()
                      ? Twine("the model has no weight matrix that only "
                              "feeds matmuls, so nothing is quantized")
                      : Twine("no parameter the selection matches can be "
                              "quantized"));
  }
};

} // namespace
