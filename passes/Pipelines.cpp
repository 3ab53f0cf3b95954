//===- Pipelines.cpp - named pass pipelines -------------------------------===//
#include "passes/Passes.h"

#include "mlir/Pass/PassRegistry.h"

void kiln::buildFrontendPipeline(mlir::OpPassManager &pm) {
  pm.addNestedPass<mlir::func::FuncOp>(createInferShapes());
}

void kiln::registerAllKilnPasses() {
  registerKilnPasses();
  mlir::PassPipelineRegistration<>(
      "kiln-frontend-pipeline",
      "The passes every module from the kiln frontend goes through",
      [](mlir::OpPassManager &pm) { buildFrontendPipeline(pm); });
}
