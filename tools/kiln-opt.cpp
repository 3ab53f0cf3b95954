//===- kiln-opt.cpp - MLIR driver for the kiln dialect and passes ---------===//
//
// mlir-opt with kiln's dialect, passes and pipelines registered: lit tests and
// compiler engineers use it with every MLIR flag (--mlir-print-ir-after-all,
// --mlir-timing, --verify-diagnostics, --split-input-file, ...).
//
//===----------------------------------------------------------------------===//
#include "ir/KilnDialect.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  registry.insert<kiln::KilnDialect, mlir::func::FuncDialect>();
  kiln::registerAllKilnPasses();
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
  mlir::registerInlinerPass();
  mlir::registerSymbolDCEPass();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "kiln optimizer driver\n", registry));
}
