// RUN: kiln-opt %s --kiln-autodiff --split-input-file --verify-diagnostics | FileCheck %s

kiln.parameter @w : tensor<3x4xf32> {init = "normal", init_args = array<f64: 0.02>}
kiln.parameter @b : tensor<3xf32> {init = "zeros"}
kiln.parameter @unused : tensor<2xf32> {init = "ones"}

// loss = cross_entropy(x @ w^T + b, t): the gradient function returns the
// loss and one gradient per parameter, in declaration order.
// CHECK-LABEL: func.func @loss_grad
// CHECK-SAME: -> (tensor<f32> {kiln.dims = []}, tensor<3x4xf32> {kiln.dims = [3, 4]}, tensor<3xf32> {kiln.dims = [3]}, tensor<2xf32> {kiln.dims = [2]})
// CHECK-SAME: kiln.gradients = ["loss", "w", "b", "unused"]
// CHECK: %[[Z:.*]] = kiln.add
// CHECK: %[[L:.*]] = kiln.cross_entropy %[[Z]], %arg1
// The backward pass is seeded with dloss/dloss = 1.
// CHECK: %[[ONE:.*]] = kiln.constant dense<1.000000e+00> : tensor<f32>
// CHECK: %[[DZ:.*]] = kiln.cross_entropy_grad %[[Z]], %arg1, %[[ONE]]
// The bias gradient sums the broadcast batch dimension.
// CHECK: %[[DB:.*]] = kiln.reduce_sum %[[DZ]] {axes = array<i64: 0>} : tensor<?x3xf32> -> tensor<3xf32>
// For y = x w^T, dw = dy^T x lands in w's [out, in] layout.
// CHECK: %[[DW:.*]] = kiln.matmul %[[DZ]], %arg0 {transpose_a = true} : tensor<?x3xf32>, tensor<?x4xf32> -> tensor<3x4xf32>
// CHECK: %[[ZERO:.*]] = kiln.constant dense<0.000000e+00> : tensor<2xf32>
// CHECK: return %[[L]], %[[DW]], %[[DB]], %[[ZERO]]
func.func @loss(%x: tensor<?x4xf32>, %t: tensor<?xi32>) -> tensor<f32> {
  %w = kiln.param @w : tensor<3x4xf32>
  %b = kiln.param @b : tensor<3xf32>
  %y = kiln.matmul %x, %w {transpose_b = true} : tensor<?x4xf32>, tensor<3x4xf32> -> tensor<?x3xf32>
  %z = kiln.add %y, %b : tensor<?x3xf32>, tensor<3xf32> -> tensor<?x3xf32>
  %l = kiln.cross_entropy %z, %t : tensor<?x3xf32>, tensor<?xi32> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// A value used twice gets the sum of both gradients.
// CHECK-LABEL: func.func @loss_grad
// CHECK: %[[P:.*]] = kiln.param @p
// CHECK: kiln.cross_entropy_grad
// CHECK: %[[G1:.*]] = kiln.mul %{{.*}}, %[[P]] :
// CHECK: %[[G2:.*]] = kiln.mul %{{.*}}, %[[P]] :
// CHECK: kiln.add %[[G1]], %[[G2]]
kiln.parameter @p : tensor<2x3xf32> {init = "normal", init_args = array<f64: 1.0>}
func.func @loss(%t: tensor<2xi32>) -> tensor<f32> {
  %p = kiln.param @p : tensor<2x3xf32>
  %sq = kiln.mul %p, %p : tensor<2x3xf32>, tensor<2x3xf32> -> tensor<2x3xf32>
  %l = kiln.cross_entropy %sq, %t : tensor<2x3xf32>, tensor<2xi32> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

kiln.parameter @p : tensor<2x3xf32> {init = "normal", init_args = array<f64: 1.0>}
func.func @loss(%t: tensor<2xi32>) -> tensor<f32> {
  %p = kiln.param @p : tensor<2x3xf32>
  // expected-error @+1 {{kiln-autodiff: no gradient rule for 'kiln.relu' yet; the loss depends on it}}
  %s = kiln.relu %p : tensor<2x3xf32>
  %l = kiln.cross_entropy %s, %t : tensor<2x3xf32>, tensor<2xi32> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// expected-error @+1 {{kiln-autodiff: 'loss' must return a scalar f32 loss first}}
func.func @loss(%x: tensor<2xf32>) -> tensor<2xf32> {
  return %x : tensor<2xf32>
}

// -----

kiln.parameter @p : tensor<2x3xf32> {init = "normal", init_args = array<f64: 1.0>}
func.func @loss(%t: tensor<2xi32>) -> tensor<f32> {
  %p = kiln.param @p : tensor<2x3xf32>
  // expected-error @+1 {{kiln-autodiff: no gradient rule for the exact (erf) GELU yet; gelu_tanh has one}}
  %s = kiln.gelu %p : tensor<2x3xf32>
  %l = kiln.cross_entropy %s, %t : tensor<2x3xf32>, tensor<2xi32> -> tensor<f32>
  return %l : tensor<f32>
}
