// MLIR's debugging flags work in kiln-opt with kiln's passes.
// RUN: kiln-opt %s --kiln-infer-shapes --mlir-print-ir-after-all 2>&1 | FileCheck %s --check-prefix=AFTER
// RUN: kiln-opt %s --kiln-infer-shapes --mlir-timing 2>&1 | FileCheck %s --check-prefix=TIMING
// RUN: kiln-opt %s --kiln-infer-shapes --mlir-print-debuginfo | FileCheck %s --check-prefix=LOC

// AFTER: // -----// IR Dump After InferShapes (kiln-infer-shapes) //----- //
// AFTER: kiln.relu %{{.*}} : tensor<2x3xf32>
// TIMING: Execution time report
// TIMING: InferShapes
// LOC: loc("model.kiln":3:7)
func.func @f(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %y = kiln.relu %x : tensor<2x3xf32> loc("model.kiln":3:7)
  return %y : tensor<2x3xf32>
}
