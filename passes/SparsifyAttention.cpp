//===- SparsifyAttention.cpp - kiln-sparsify-attention --------------------===//
//
// Applies a sparse attention pattern to a model's attention ops from outside
// the model file (kiln compile --attention=...). The pattern itself is only
// an attribute here; the runtime turns it into block lists once the
// sequence lengths are known (runtime/attention/Pattern.h).
//
//===----------------------------------------------------------------------===//
#include "ir/AttentionPattern.h"
#include "ir/KilnOps.h"
#include "ir/Locations.h"
#include "passes/Passes.h"

#include "llvm/ADT/STLExtras.h"

namespace kiln {
#define GEN_PASS_DEF_SPARSIFYATTENTION
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

struct SparsifyAttention
    : kiln::impl::SparsifyAttentionBase<SparsifyAttention> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto fail = [&](const Twine &msg) {
      module.emitError("kiln-sparsify-attention: ") << msg;
      signalPassFailure();
    };
    runtime::attention::PatternSpec spec;
    std::string error;
    if (!parsePatternText(pattern, spec, error))
      return fail(error);
    for (const std::string &name : functions)
      if (!module.lookupSymbol<func::FuncOp>(name)) {
        std::string names;
        for (auto fn : module.getOps<func::FuncOp>())
          names += (names.empty() ? "" : ", ") + fn.getName().str();
        return fail("the model has no function '" + name +
                    "'; it has: " + names);
      }
    AttentionPatternAttr attr =
        spec.sparse() ? AttentionPatternAttr::get(&getContext(), spec)
                      : AttentionPatternAttr();
    int64_t changed = 0;
    bool bad = false;
    for (auto fn : module.getOps<func::FuncOp>()) {
      if (!functions.empty() && !llvm::is_contained(functions, fn.getName()))
        continue;
      fn.walk([&](Operation *op) {
        if (!isa<AttentionOp, AttentionGradOp>(op))
          return;
        if (!blocks.empty()) {
          StringRef instance = blockInstance(op->getLoc());
          bool selected = false;
          for (const std::string &sel : blocks) {
            selected = selected || blockSelected(sel, instance, error);
            if (!error.empty()) {
              bad = true;
              return;
            }
          }
          if (!selected)
            return;
        }
        if (attr)
          op->setAttr("pattern", attr);
        else
          op->removeAttr("pattern");
        ++changed;
      });
      if (bad)
        return fail(error);
    }
    if (changed == 0)
      return fail("no attention op is in the selected " +
                  Twine(blocks.empty() ? "functions" : "functions and blocks") +
                  " (pattern " + pattern + ")");
  }
};

} // namespace
