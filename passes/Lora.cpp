//===- Lora.cpp - LoRA adapters on linear layers --------------------------===//
//
// kiln-lora (passes/Passes.td): adapters A [r, in] and B [out, r] beside
// each selected weight W [out, in], the products x Wᵀ rewritten to
// x Wᵀ + s (x Aᵀ) Bᵀ with s = alpha / r, and every other parameter frozen.
// The adapters' names and the spec come from runtime/lora/LoraSpec.h, which
// the artifact writer and the PEFT adapter files share.
//
//===----------------------------------------------------------------------===//
#include "ir/KilnOps.h"
#include "passes/Passes.h"
#include "runtime/lora/LoraSpec.h"

#include "llvm/ADT/StringSet.h"
#include "llvm/Support/GlobPattern.h"

#include <cmath>

namespace kiln {
#define GEN_PASS_DEF_LORA
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

/// A linear layer's product: x Wᵀ with W as the right-hand side.
bool linearUse(OpOperand &use) {
  auto mm = llvm::dyn_cast<MatmulOp>(use.getOwner());
  return mm && use.getOperandNumber() == 1 && mm.getTransposeB() &&
         !mm.getTransposeA();
}

/// `type` with its last dimension replaced by `last`.
RankedTensorType withLast(Type type, int64_t last) {
  auto t = llvm::cast<RankedTensorType>(type);
  SmallVector<int64_t> shape(t.getShape());
  shape.back() = last;
  return RankedTensorType::get(shape, t.getElementType());
}

struct LoraPass : kiln::impl::LoraBase<LoraPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto fail = [&](const Twine &msg) {
      module.emitError("kiln-lora: ") << msg;
      signalPassFailure();
    };
    if (rank < 1 || rank > 4096)
      return fail("rank " + Twine(static_cast<int64_t>(rank)) +
                  " is not from 1 to 4096");
    if (!(alpha > 0) || !std::isfinite(alpha))
      return fail("alpha " + Twine(std::to_string(static_cast<double>(alpha))) +
                  " is not a positive number");
    if (module->hasAttr("kiln.lora"))
      return fail("the module has LoRA adapters already");
    std::vector<llvm::GlobPattern> globs;
    llvm::StringSet<> exact;
    for (const std::string &g : targets) {
      llvm::Expected<llvm::GlobPattern> p = llvm::GlobPattern::create(g);
      if (!p)
        return fail("the target pattern '" + g +
                    "' is not a glob: " + llvm::toString(p.takeError()));
      if (g.find_first_of("*?[\\") == std::string::npos)
        exact.insert(g);
      globs.push_back(std::move(*p));
    }

    // Each parameter's reads, and the first use that is not a linear
    // layer's product.
    llvm::StringMap<SmallVector<ParamOp>> reads;
    llvm::StringMap<Operation *> other;
    module.walk([&](ParamOp read) {
      reads[read.getName()].push_back(read);
      for (OpOperand &use : read.getResult().getUses())
        if (!linearUse(use) && !other.lookup(read.getName()))
          other[read.getName()] = use.getOwner();
    });

    SmallVector<ParameterOp> params(module.getOps<ParameterOp>());
    SmallVector<Attribute> chosen;
    OpBuilder b(module.getContext());
    for (ParameterOp p : params) {
      StringRef name = p.getSymName();
      bool named = llvm::any_of(
          globs, [&](const llvm::GlobPattern &g) { return g.match(name); });
      if (!globs.empty() && !named)
        continue;
      auto type = llvm::cast<RankedTensorType>(p.getType());
      bool matrix = type.getRank() == 2 && type.getElementType().isF32();
      bool read = reads.count(name);
      Operation *blocker = other.lookup(name);
      if (!matrix || !read || blocker) {
        if (!exact.contains(name))
          continue; // by default and by wildcard, only linear weights
        if (!matrix) {
          p.emitError("kiln-lora: parameter '")
              << name << "' is " << type
              << "; adapters go beside f32 matrices [out, in]";
        } else if (!read) {
          p.emitError("kiln-lora: parameter '")
              << name << "' is not read by any function";
        } else {
          InFlightDiagnostic d = blocker->emitError("kiln-lora: '")
                                 << blocker->getName() << "' reads parameter '"
                                 << name
                                 << "'; adapters go beside weights read only "
                                    "as linear layers read them (x Wᵀ)";
          d.attachNote(p.getLoc()) << "the parameter is declared here";
        }
        return signalPassFailure();
      }
      if (module.lookupSymbol(runtime::lora::loraA(name.str())) ||
          module.lookupSymbol(runtime::lora::loraB(name.str())))
        return fail("the model already has a parameter named '" +
                    runtime::lora::loraA(name.str()) + "' or '" +
                    runtime::lora::loraB(name.str()) + "'");
      chosen.push_back(b.getStringAttr(name));
      addAdapters(b, p, reads[name]);
    }
    if (chosen.empty())
      return fail(globs.empty()
                      ? Twine("the model has no linear layer to adapt")
                      : Twine("no parameter the targets match is a linear "
                              "layer's weight"));
    // Only the adapters train.
    llvm::StringSet<> adapters;
    for (Attribute a : chosen) {
      std::string t = llvm::cast<StringAttr>(a).str();
      adapters.insert(runtime::lora::loraA(t));
      adapters.insert(runtime::lora::loraB(t));
    }
    for (ParameterOp p : module.getOps<ParameterOp>())
      if (!adapters.contains(p.getSymName()))
        p.setFrozen(true);
    module->setAttr("kiln.lora",
                    b.getDictionaryAttr(
                        {b.getNamedAttr("rank", b.getI64IntegerAttr(rank)),
                         b.getNamedAttr("alpha", b.getF64FloatAttr(alpha)),
                         b.getNamedAttr("targets", b.getArrayAttr(chosen))}));
  }

  /// A and B beside `p`, and every product reading it rewritten.
  void addAdapters(OpBuilder &b, ParameterOp p, ArrayRef<ParamOp> reads) {
    auto type = llvm::cast<RankedTensorType>(p.getType());
    int64_t out = type.getDimSize(0), in = type.getDimSize(1);
    auto f32 = b.getF32Type();
    auto aType = RankedTensorType::get({rank, in}, f32);
    auto bType = RankedTensorType::get({out, rank}, f32);
    std::string nameA = runtime::lora::loraA(p.getSymName().str()),
                nameB = runtime::lora::loraB(p.getSymName().str());
    b.setInsertionPointAfter(p);
    double bound = 1.0 / std::sqrt(static_cast<double>(in));
    auto a = b.create<ParameterOp>(p.getLoc(), nameA, aType, "uniform",
                                   b.getDenseF64ArrayAttr({-bound, bound}),
                                   /*frozen=*/false, StringAttr());
    b.setInsertionPointAfter(a);
    b.create<ParameterOp>(p.getLoc(), nameB, bType, "zeros",
                          b.getDenseF64ArrayAttr({}), /*frozen=*/false,
                          StringAttr());
    auto scalar = RankedTensorType::get({}, f32);
    auto scale = DenseElementsAttr::get(
        scalar, static_cast<float>(alpha / static_cast<double>(rank)));
    for (ParamOp read : reads) {
      SmallVector<MatmulOp> products;
      for (Operation *user : read.getResult().getUsers())
        products.push_back(llvm::cast<MatmulOp>(user));
      for (MatmulOp mm : products) {
        // Built after the product, at its location (so --recompute keeps
        // the adapter's ops in the same block).
        Location loc = mm.getLoc();
        b.setInsertionPointAfter(mm);
        Value x = mm.getLhs();
        Value ra = b.create<ParamOp>(loc, aType, nameA);
        Value rb = b.create<ParamOp>(loc, bType, nameB);
        Value h = b.create<MatmulOp>(loc, withLast(x.getType(), rank), x, ra,
                                     /*transpose_a=*/false,
                                     /*transpose_b=*/true);
        Value d = b.create<MatmulOp>(loc, mm.getType(), h, rb, false, true);
        Value s =
            b.create<ConstantOp>(loc, scalar, llvm::cast<ElementsAttr>(scale));
        Value ds = b.create<MulOp>(loc, mm.getType(), d, s);
        auto sum = b.create<AddOp>(loc, mm.getType(), mm.getResult(), ds);
        mm.getResult().replaceAllUsesExcept(sum.getResult(), sum);
      }
    }
  }
};

} // namespace
