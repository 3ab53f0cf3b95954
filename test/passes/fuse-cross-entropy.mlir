// RUN: kiln-opt %s --kiln-fuse-cross-entropy --split-input-file | FileCheck %s

// CHECK-LABEL: func.func @loss_grad
// CHECK: %[[ONE:.*]] = kiln.constant
// CHECK-NEXT: %[[L:.*]], %[[D:.*]] = kiln.softmax_cross_entropy %arg0, %arg1, %[[ONE]]
// CHECK-NEXT: return %[[L]], %[[D]]
func.func @loss_grad(%l: tensor<?x?x50xf32>, %t: tensor<?x?xi32>) -> (tensor<f32>, tensor<?x?x50xf32>) {
  %one = kiln.constant dense<1.0> : tensor<f32>
  %0 = kiln.cross_entropy %l, %t : tensor<?x?x50xf32>, tensor<?x?xi32> -> tensor<f32>
  %1 = kiln.cross_entropy_grad %l, %t, %one : tensor<?x?x50xf32>, tensor<?x?xi32>, tensor<f32> -> tensor<?x?x50xf32>
  return %0, %1 : tensor<f32>, tensor<?x?x50xf32>
}

// -----

// Different targets: two separate kernels.
// CHECK-LABEL: func.func @other_targets
// CHECK: kiln.cross_entropy %arg0, %arg1
// CHECK: kiln.cross_entropy_grad %arg0, %arg2
func.func @other_targets(%l: tensor<?x?x50xf32>, %t: tensor<?x?xi32>, %u: tensor<?x?xi32>) -> (tensor<f32>, tensor<?x?x50xf32>) {
  %one = kiln.constant dense<1.0> : tensor<f32>
  %0 = kiln.cross_entropy %l, %t : tensor<?x?x50xf32>, tensor<?x?xi32> -> tensor<f32>
  %1 = kiln.cross_entropy_grad %l, %u, %one : tensor<?x?x50xf32>, tensor<?x?xi32>, tensor<f32> -> tensor<?x?x50xf32>
  return %0, %1 : tensor<f32>, tensor<?x?x50xf32>
}
