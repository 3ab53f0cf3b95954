// RUN: kiln-opt %s --kiln-fuse-elementwise --split-input-file | FileCheck %s

// Llama's gated MLP: silu and the product become one pass.
// CHECK-LABEL: func.func @swiglu
// CHECK: %[[F:.*]] = kiln.fused_elementwise %arg0, %arg1 : tensor<?x?x64xf32>, tensor<?x?x64xf32> -> tensor<?x?x64xf32> {
// CHECK-NEXT: ^bb0(%[[A:.*]]: tensor<f32>, %[[B:.*]]: tensor<f32>):
// CHECK-NEXT: %[[S:.*]] = kiln.silu %[[A]] : tensor<f32>
// CHECK-NEXT: %[[M:.*]] = kiln.mul %[[S]], %[[B]]
// CHECK-NEXT: kiln.yield %[[M]] : tensor<f32>
// CHECK: return %[[F]]
func.func @swiglu(%g: tensor<?x?x64xf32>, %u: tensor<?x?x64xf32>) -> tensor<?x?x64xf32> {
  %s = kiln.silu %g : tensor<?x?x64xf32>
  %m = kiln.mul %s, %u : tensor<?x?x64xf32>, tensor<?x?x64xf32> -> tensor<?x?x64xf32>
  return %m : tensor<?x?x64xf32>
}

// -----

// The add has two users outside any one chain, so it stays; the scalar
// constant moves into the body of the mul/tanh chain.
// CHECK-LABEL: func.func @scaled
// CHECK: %[[ADD:.*]] = kiln.add %arg0, %arg1
// CHECK: kiln.fused_elementwise %[[ADD]] : tensor<?x8xf32> -> tensor<?x8xf32> {
// CHECK: kiln.constant dense<2.000000e+00> : tensor<f32>
// CHECK: kiln.mul
// CHECK: kiln.tanh
// CHECK: kiln.yield
// CHECK: kiln.exp %[[ADD]]
func.func @scaled(%x: tensor<?x8xf32>, %b: tensor<8xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>) {
  %c = kiln.constant dense<2.0> : tensor<f32>
  %0 = kiln.add %x, %b : tensor<?x8xf32>, tensor<8xf32> -> tensor<?x8xf32>
  %1 = kiln.mul %0, %c : tensor<?x8xf32>, tensor<f32> -> tensor<?x8xf32>
  %2 = kiln.tanh %1 : tensor<?x8xf32>
  %3 = kiln.exp %0 : tensor<?x8xf32>
  return %2, %3 : tensor<?x8xf32>, tensor<?x8xf32>
}
