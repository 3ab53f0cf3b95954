// RUN: kiln-opt %s --kiln-fuse-matmul-epilogue --split-input-file | FileCheck %s

// Bias, scale, activation and residual all fold into one fused_matmul.
// CHECK-LABEL: func.func @mlp
// CHECK-SAME: (%[[X:.*]]: tensor<2x8x16xf32>, %[[W:.*]]: tensor<32x16xf32>, %[[B:.*]]: tensor<32xf32>, %[[R:.*]]: tensor<2x8x32xf32>)
// CHECK: %[[Y:.*]] = kiln.fused_matmul %[[X]], %[[W]] bias %[[B]] residual %[[R]] {activation = #kiln<activation gelu_tanh>, scale = 5.000000e-01 : f64, transpose_b = true}
// CHECK-NOT: kiln.add
// CHECK-NOT: kiln.gelu
// CHECK: return %[[Y]]
func.func @mlp(%x: tensor<2x8x16xf32>, %w: tensor<32x16xf32>, %b: tensor<32xf32>, %r: tensor<2x8x32xf32>) -> tensor<2x8x32xf32> {
  %0 = kiln.matmul %x, %w {transpose_b = true} : tensor<2x8x16xf32>, tensor<32x16xf32> -> tensor<2x8x32xf32>
  %1 = kiln.add %0, %b : tensor<2x8x32xf32>, tensor<32xf32> -> tensor<2x8x32xf32>
  %c = kiln.constant dense<0.5> : tensor<f32>
  %2 = kiln.mul %1, %c : tensor<2x8x32xf32>, tensor<f32> -> tensor<2x8x32xf32>
  %3 = kiln.gelu %2 {approximate = #kiln<gelu tanh>} : tensor<2x8x32xf32>
  %4 = kiln.add %r, %3 : tensor<2x8x32xf32>, tensor<2x8x32xf32> -> tensor<2x8x32xf32>
  return %4 : tensor<2x8x32xf32>
}

// -----

// The biased value has a second user (as a pre-activation the backward pass
// reads), so the relu stays a separate op.
// CHECK-LABEL: func.func @kept
// CHECK: %[[Z:.*]] = kiln.fused_matmul %{{.*}}, %{{.*}} bias %{{.*}} {transpose_b = true}
// CHECK: %[[A:.*]] = kiln.relu %[[Z]]
// CHECK: return %[[Z]], %[[A]]
func.func @kept(%x: tensor<2x8x16xf32>, %w: tensor<32x16xf32>, %b: tensor<32xf32>) -> (tensor<2x8x32xf32>, tensor<2x8x32xf32>) {
  %0 = kiln.matmul %x, %w {transpose_b = true} : tensor<2x8x16xf32>, tensor<32x16xf32> -> tensor<2x8x32xf32>
  %1 = kiln.add %0, %b : tensor<2x8x32xf32>, tensor<32xf32> -> tensor<2x8x32xf32>
  %2 = kiln.relu %1 : tensor<2x8x32xf32>
  return %1, %2 : tensor<2x8x32xf32>, tensor<2x8x32xf32>
}
