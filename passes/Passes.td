//===- Passes.td - kiln passes -----------------------------*- tablegen -*-===//
#ifndef KILN_PASSES
#define KILN_PASSES

include "mlir/Pass/PassBase.td"

def InferShapes : Pass<"kiln-infer-shapes", "mlir::func::FuncOp"> {
  let summary = "Refine result types from operand types";
  let description = [{
    Re-runs every kiln op's shape inference in program order and replaces a
    result type by the inferred one wherever the inferred type is more static
    (a `?` that the operands now determine). Function result types are updated
    to match what the function returns. Run it after binding symbolic
    dimensions to sizes, so every intermediate gets a static shape.

    Example: with `%x : tensor<2x8x64xf32>`, an op declared as
    `kiln.gelu %x : tensor<?x?x64xf32>` is not valid (its type must match), but
    `kiln.matmul %x, %w : ... -> tensor<?x?x128xf32>` becomes
    `tensor<2x8x128xf32>`.
  }];
  let dependentDialects = ["::kiln::KilnDialect"];
}

#endif // KILN_PASSES
