// RUN: kiln-opt %s --kiln-autodiff --kiln-train-step="weight-decay=0.1 max-norm=0.5" --split-input-file --verify-diagnostics | FileCheck %s

kiln.parameter @w : tensor<4x3xf32> {init = "normal", init_args = array<f64: 0.5>}
kiln.parameter @b : tensor<3xf32> {init = "zeros"}

// train_step takes the loss's inputs plus lr and step, runs the gradient
// function's body, takes the global gradient norm and updates every
// parameter in place; weight decay only on the matrix.
// CHECK-LABEL: func.func @train_step
// CHECK-SAME: %{{.*}}: tensor<f32> {kiln.dims = [], kiln.name = "lr"}, %{{.*}}: tensor<f32> {kiln.dims = [], kiln.name = "step"}
// CHECK-SAME: -> (tensor<f32> {kiln.dims = [], kiln.name = "loss"}, tensor<f32> {kiln.dims = [], kiln.name = "grad_norm"})
// CHECK: %[[L:.*]] = kiln.cross_entropy
// CHECK: %[[N:.*]] = kiln.global_norm %[[GW:.*]], %[[GB:.*]] : tensor<4x3xf32>, tensor<3xf32> -> tensor<f32>
// CHECK: %[[W:.*]] = kiln.param @w
// CHECK: kiln.optimizer_update %[[W]], %[[GW]], %[[N]], %arg2, %arg3 {{{.*}}kind = #kiln<optimizer adamw>, max_norm = 5.000000e-01 : f64{{.*}}weight_decay = 1.000000e-01 : f64}
// CHECK: %[[B:.*]] = kiln.param @b
// CHECK: kiln.optimizer_update %[[B]], %[[GB]], %[[N]], %arg2, %arg3 {{{.*}}weight_decay = 0.000000e+00 : f64}
// CHECK: return %[[L]], %[[N]]
func.func @loss(%x: tensor<?x4xf32>, %t: tensor<?xi32>) -> tensor<f32> {
  %w = kiln.param @w : tensor<4x3xf32>
  %b = kiln.param @b : tensor<3xf32>
  %y = kiln.matmul %x, %w : tensor<?x4xf32>, tensor<4x3xf32> -> tensor<?x3xf32>
  %z = kiln.add %y, %b : tensor<?x3xf32>, tensor<3xf32> -> tensor<?x3xf32>
  %l = kiln.cross_entropy %z, %t : tensor<?x3xf32>, tensor<?xi32> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// A frozen parameter is neither clipped with nor updated.
kiln.parameter @w : tensor<4x3xf32> {init = "normal", init_args = array<f64: 0.5>}
kiln.parameter @b : tensor<3xf32> {frozen, init = "zeros"}

// CHECK-LABEL: func.func @train_step
// CHECK: %[[N:.*]] = kiln.global_norm %[[GW:[^ ]*]] : tensor<4x3xf32> -> tensor<f32>
// CHECK: kiln.optimizer_update %{{.*}}, %[[GW]], %[[N]]
// CHECK-NOT: kiln.optimizer_update
// CHECK: return
func.func @loss(%x: tensor<?x4xf32>, %t: tensor<?xi32>) -> tensor<f32> {
  %w = kiln.param @w : tensor<4x3xf32>
  %b = kiln.param @b : tensor<3xf32>
  %y = kiln.matmul %x, %w : tensor<?x4xf32>, tensor<4x3xf32> -> tensor<?x3xf32>
  %z = kiln.add %y, %b : tensor<?x3xf32>, tensor<3xf32> -> tensor<?x3xf32>
  %l = kiln.cross_entropy %z, %t : tensor<?x3xf32>, tensor<?xi32> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// expected-error @+1 {{kiln-train-step: every parameter is frozen; there is nothing to train}}
module {
  kiln.parameter @b : tensor<3xf32> {frozen, init = "zeros"}
  func.func @loss(%x: tensor<?x3xf32>, %t: tensor<?xi32>) -> tensor<f32> {
    %b = kiln.param @b : tensor<3xf32>
    %z = kiln.add %x, %b : tensor<?x3xf32>, tensor<3xf32> -> tensor<?x3xf32>
    %l = kiln.cross_entropy %z, %t : tensor<?x3xf32>, tensor<?xi32> -> tensor<f32>
    return %l : tensor<f32>
  }
}
