//===- Pipelines.cpp - named pass pipelines -------------------------------===//
#include "passes/Passes.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

void kiln::buildFrontendPipeline(mlir::OpPassManager &pm) {
  pm.addNestedPass<mlir::func::FuncOp>(createInferShapes());
  // Folds such as transpose-into-matmul, then removal of what they orphan.
  pm.addPass(mlir::createCanonicalizerPass());
  pm.addPass(mlir::createCSEPass());
}

void kiln::buildFusionPipeline(mlir::OpPassManager &pm) {
  // Order matters: weight-gradient products and the loss first, then the
  // matmul epilogues (which may take a residual add), then add + norm for
  // the adds left, then whatever elementwise chains remain.
  auto &fn = pm.nest<mlir::func::FuncOp>();
  fn.addPass(createFuseMatmulReduce());
  fn.addPass(createFuseCrossEntropy());
  fn.addPass(createFuseMatmulEpilogue());
  fn.addPass(createFuseAddNorm());
  fn.addPass(createFuseElementwise());
  pm.addPass(mlir::createCSEPass());
}

void kiln::registerAllKilnPasses() {
  registerKilnPasses();
  mlir::PassPipelineRegistration<>(
      "kiln-frontend-pipeline",
      "The passes every module from the kiln frontend goes through",
      [](mlir::OpPassManager &pm) { buildFrontendPipeline(pm); });
  mlir::PassPipelineRegistration<>(
      "kiln-fusion-pipeline",
      "The fusion passes the CPU backend runs before lowering",
      [](mlir::OpPassManager &pm) { buildFusionPipeline(pm); });
}

mlir::LogicalResult kiln::fuse(mlir::ModuleOp module) {
  mlir::PassManager pm(module.getContext());
  buildFusionPipeline(pm);
  return pm.run(module);
}
