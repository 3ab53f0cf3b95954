// RUN: kiln-opt %s --kiln-autodiff="function=loss recompute=true" --canonicalize | FileCheck %s

// Two block instances, h.0 and h.1 (the call-site names the frontend gives
// inlined block functions). With recompute, each block's forward ops are
// cloned (kiln.recomputed) right before its backward ops, which read the
// clones; the forward values inside a block then die with the forward pass.
// Only the block boundary %3 (h.0's output, h.1's input) is read by both.
// CHECK-LABEL: func.func @loss_grad
// CHECK: %[[H0:.*]] = kiln.matmul %arg0
// CHECK: %[[T0:.*]] = kiln.tanh %[[H0]]
// CHECK: %[[Y0:.*]] = kiln.add %[[T0]], %arg0
// CHECK: %[[H1:.*]] = kiln.matmul %[[Y0]]
// CHECK: kiln.cross_entropy_grad
// h.1 recomputed from its input, then its backward reads the clone:
// CHECK: %[[RH1:.*]] = kiln.matmul %[[Y0]], %{{.*}} {kiln.recomputed}
// CHECK: %[[RT1:.*]] = kiln.tanh %[[RH1]] {kiln.recomputed}
// CHECK: kiln.mul %[[RT1]], %[[RT1]]
// CHECK: kiln.matmul %[[Y0]], %{{.*}} {transpose_a = true}
// h.0 recomputed last, from the function's input:
// CHECK: %[[RH0:.*]] = kiln.matmul %arg0, %{{.*}} {kiln.recomputed}
// CHECK: %[[RT0:.*]] = kiln.tanh %[[RH0]] {kiln.recomputed}
// CHECK: kiln.mul %[[RT0]], %[[RT0]]
// CHECK-NOT: kiln.tanh %[[T0]]
// CHECK: return
kiln.parameter @w : tensor<4x4xf32> {init = "normal", init_args = array<f64: 0.5>}
func.func @loss(%x: tensor<?x4xf32>, %t: tensor<?xi32>) -> tensor<f32> {
  %w = kiln.param @w : tensor<4x4xf32>
  %h = kiln.matmul %x, %w : tensor<?x4xf32>, tensor<4x4xf32> -> tensor<?x4xf32> loc(callsite("m.kiln":3:5 at "h.0"("m.kiln":9:1)))
  %a = kiln.tanh %h : tensor<?x4xf32> loc(callsite("m.kiln":4:5 at "h.0"("m.kiln":9:1)))
  %y = kiln.add %a, %x : tensor<?x4xf32>, tensor<?x4xf32> -> tensor<?x4xf32> loc(callsite("m.kiln":5:5 at "h.0"("m.kiln":9:1)))
  %h2 = kiln.matmul %y, %w : tensor<?x4xf32>, tensor<4x4xf32> -> tensor<?x4xf32> loc(callsite("m.kiln":3:5 at "h.1"("m.kiln":9:1)))
  %a2 = kiln.tanh %h2 : tensor<?x4xf32> loc(callsite("m.kiln":4:5 at "h.1"("m.kiln":9:1)))
  %y2 = kiln.add %a2, %y : tensor<?x4xf32>, tensor<?x4xf32> -> tensor<?x4xf32> loc(callsite("m.kiln":5:5 at "h.1"("m.kiln":9:1)))
  %l = kiln.cross_entropy %y2, %t : tensor<?x4xf32>, tensor<?xi32> -> tensor<f32>
  return %l : tensor<f32>
}
