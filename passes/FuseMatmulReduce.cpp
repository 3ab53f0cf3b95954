//===- FuseMatmulReduce.cpp - batched weight gradients as one product -----===//
//
// sum_b A[b]^T X[b] over the batch is A^T X over the flattened rows: one
// GEMM with a long contraction instead of B short ones and a reduction.
//
//===----------------------------------------------------------------------===//
#include "ir/KilnOps.h"
#include "passes/Passes.h"

#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "kiln-fuse-matmul-reduce"

namespace kiln {
#define GEN_PASS_DEF_FUSEMATMULREDUCE
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

void fuse(ReduceSumOp sum) {
  auto mm = sum.getInput().getDefiningOp<MatmulOp>();
  if (!mm || !mm.getResult().hasOneUse() || !mm.getTransposeA() ||
      mm.getTransposeB() || sum.getKeepdim())
    return;
  auto a = llvm::cast<RankedTensorType>(mm.getLhs().getType());
  auto b = llvm::cast<RankedTensorType>(mm.getRhs().getType());
  int64_t rank = a.getRank();
  if (rank < 3 || b.getRank() != rank)
    return;
  // Equal batch dimensions (a static mismatch would be a broadcast).
  for (int64_t d = 0; d < rank - 2; ++d)
    if (a.getDimSize(d) != b.getDimSize(d) && !a.isDynamicDim(d) &&
        !b.isDynamicDim(d))
      return;
  SmallVector<int64_t> axes(sum.getAxes());
  llvm::sort(axes);
  if (static_cast<int64_t>(axes.size()) != rank - 2)
    return;
  for (int64_t d = 0; d < rank - 2; ++d)
    if (axes[d] != d)
      return;
  OpBuilder builder(sum);
  auto fused = builder.create<FusedMatmulOp>(
      FusedLoc::get(builder.getContext(), {mm.getLoc(), sum.getLoc()}),
      sum.getType(), mm.getLhs(), mm.getRhs(), Value(), Value(), true, false,
      Activation::None, llvm::APFloat(1.0), true);
  LLVM_DEBUG(llvm::dbgs() << "fused " << fused << "\n");
  sum.getResult().replaceAllUsesWith(fused.getResult());
  sum.erase();
  mm.erase();
}

struct FuseMatmulReducePass
    : kiln::impl::FuseMatmulReduceBase<FuseMatmulReducePass> {
  void runOnOperation() override {
    SmallVector<ReduceSumOp> sums;
    getOperation().walk([&](ReduceSumOp s) { sums.push_back(s); });
    for (ReduceSumOp s : sums)
      fuse(s);
  }
};

} // namespace
