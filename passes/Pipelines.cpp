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

void kiln::registerAllKilnPasses() {
  registerKilnPasses();
  mlir::PassPipelineRegistration<>(
      "kiln-frontend-pipeline",
      "The passes every module from the kiln frontend goes through",
      [](mlir::OpPassManager &pm) { buildFrontendPipeline(pm); });
}
