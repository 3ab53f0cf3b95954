//===- FuseMatmulEpilogue.cpp - matmul + bias/scale/act/residual ----------===//
//
// Walks forward from each kiln.matmul through the ops that can become
// oneDNN post-ops, in the fixed order the fused op computes them:
// act(scale * (a x b + bias)) + residual. Each step needs the value so far
// to have exactly one use, so nothing another op reads is lost.
//
//===----------------------------------------------------------------------===//
#include "ir/KilnOps.h"
#include "passes/Passes.h"

#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "kiln-fuse-matmul-epilogue"

namespace kiln {
#define GEN_PASS_DEF_FUSEMATMULEPILOGUE
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

/// The single user of `v`, if it has exactly one use.
Operation *onlyUser(Value v) {
  return v.hasOneUse() ? *v.getUsers().begin() : nullptr;
}

/// The other operand of a binary op `op` that reads `v`.
Value otherOperand(Operation *op, Value v) {
  return op->getOperand(0) == v ? op->getOperand(1) : op->getOperand(0);
}

/// A scalar f32 constant (any shape with one element).
std::optional<double> scalarConstant(Value v) {
  auto c = v.getDefiningOp<ConstantOp>();
  if (!c)
    return std::nullopt;
  auto attr = llvm::dyn_cast<DenseElementsAttr>(c.getValue());
  if (!attr || !attr.isSplat() || attr.getNumElements() != 1 ||
      !attr.getElementType().isF32())
    return std::nullopt;
  return attr.getSplatValue<APFloat>().convertToDouble();
}

void fuse(MatmulOp mm) {
  Value cur = mm.getResult();
  auto type = llvm::cast<RankedTensorType>(cur.getType());
  int64_t n = type.getDimSize(type.getRank() - 1);
  SmallVector<Operation *> chain{mm};
  Value bias, residual;
  double scale = 1.0;
  Activation act = Activation::None;

  if (auto add = llvm::dyn_cast_or_null<AddOp>(onlyUser(cur))) {
    Value b = otherOperand(add, cur);
    auto bt = llvm::cast<RankedTensorType>(b.getType());
    if (b != cur && bt.getRank() == 1 && bt.getDimSize(0) == n &&
        !ShapedType::isDynamic(n) && add.getType() == type) {
      bias = b;
      cur = add.getResult();
      chain.push_back(add);
    }
  }
  if (auto mul = llvm::dyn_cast_or_null<MulOp>(onlyUser(cur))) {
    if (auto s = scalarConstant(otherOperand(mul, cur));
        s && mul.getType() == type) {
      scale = *s;
      cur = mul.getResult();
      chain.push_back(mul);
    }
  }
  if (Operation *user = onlyUser(cur)) {
    Activation kind =
        llvm::TypeSwitch<Operation *, Activation>(user)
            .Case([](ReluOp) { return Activation::Relu; })
            .Case([](SiluOp) { return Activation::Silu; })
            .Case([](GeluOp g) {
              return g.getApproximate() == GeluApproximation::Tanh
                         ? Activation::GeluTanh
                         : Activation::Gelu;
            })
            .Default([](Operation *) { return Activation::None; });
    if (kind != Activation::None) {
      act = kind;
      cur = user->getResult(0);
      chain.push_back(user);
    }
  }
  if (auto add = llvm::dyn_cast_or_null<AddOp>(onlyUser(cur))) {
    Value r = otherOperand(add, cur);
    if (r != cur && r.getType() == type && add.getType() == type) {
      residual = r;
      cur = add.getResult();
      chain.push_back(add);
    }
  }
  if (chain.size() == 1)
    return;
  Operation *last = chain.back();
  SmallVector<Location> locs;
  for (Operation *op : chain)
    locs.push_back(op->getLoc());
  OpBuilder b(last);
  auto fused = b.create<FusedMatmulOp>(
      FusedLoc::get(b.getContext(), locs), type, mm.getLhs(), mm.getRhs(), bias,
      residual, mm.getTransposeA(), mm.getTransposeB(), act,
      llvm::APFloat(scale), false);
  LLVM_DEBUG(llvm::dbgs() << "fused " << chain.size() << " ops into " << fused
                          << "\n");
  last->getResult(0).replaceAllUsesWith(fused.getResult());
  for (Operation *op : llvm::reverse(chain))
    op->erase();
}

struct FuseMatmulEpiloguePass
    : kiln::impl::FuseMatmulEpilogueBase<FuseMatmulEpiloguePass> {
  void runOnOperation() override {
    SmallVector<MatmulOp> matmuls;
    getOperation().walk([&](MatmulOp m) { matmuls.push_back(m); });
    for (MatmulOp m : matmuls)
      fuse(m);
  }
};

} // namespace
