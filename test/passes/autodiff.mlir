// RUN: kiln-opt %s --kiln-autodiff --split-input-file --verify-diagnostics | FileCheck %s

kiln.parameter @w : tensor<3x4xf32> {init = "normal", init_args = array<f64: 0.02>}
kiln.parameter @b : tensor<3xf32> {init = "zeros"}
kiln.parameter @unused : tensor<2xf32> {init = "ones"}

// loss = cross_entropy(x @ w^T + b, t): the gradient function returns the
// loss and one gradient per parameter, in declaration order.
// CHECK-LABEL: func.func @loss_grad
// CHECK-SAME: -> (tensor<f32> {kiln.dims = [], kiln.name = "loss"}, tensor<3x4xf32> {kiln.dims = [3, 4], kiln.name = "w.grad"}, tensor<3xf32> {kiln.dims = [3], kiln.name = "b.grad"}, tensor<2xf32> {kiln.dims = [2], kiln.name = "unused.grad"})
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
  // expected-error @+1 {{kiln-autodiff: no gradient rule for 'kiln.max' yet; the loss depends on it}}
  %s = kiln.max %p, %p : tensor<2x3xf32>, tensor<2x3xf32> -> tensor<2x3xf32>
  %l = kiln.cross_entropy %s, %t : tensor<2x3xf32>, tensor<2xi32> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// expected-error @+1 {{kiln-autodiff: 'loss' must return a scalar f32 loss first}}
func.func @loss(%x: tensor<2xf32>) -> tensor<2xf32> {
  return %x : tensor<2xf32>
}

// -----

// GPT-2's embedding, positional slice, dropout and attention: attention is
// rewritten to save its log-sum-exp, which the fused backward reads; dropout's
// backward is the same dropout (same seed, same mask); the slice's gradient
// is placed back into zeros shaped like the table; the embedding's gradient is
// a scatter-add into the table.
// CHECK-LABEL: func.func @loss_grad
// CHECK: %[[WTE:.*]] = kiln.param @wte
// CHECK: %[[X:.*]] = kiln.embedding %[[WTE]], %arg0
// CHECK: %[[WPE:.*]] = kiln.param @wpe
// CHECK: %[[P:.*]] = kiln.slice %[[WPE]]
// CHECK: %[[H:.*]] = kiln.add %[[X]], %[[P]]
// CHECK: %[[D:.*]] = kiln.dropout %[[H]] {rate = 1.000000e-01 : f64, seed = 7 : i64}
// CHECK: %[[O:.*]], %[[LSE:.*]] = kiln.attention %[[D]], %[[D]], %[[D]] {causal = true, num_heads = 2 : i64, num_kv_heads = 2 : i64, save_lse, scale = 5.000000e-01 : f64}
// CHECK-SAME: -> (tensor<?x?x8xf32>, tensor<?x2x?xf32>)
// CHECK: %[[G:.*]] = kiln.cross_entropy_grad %[[O]]
// CHECK: %[[DQ:.*]], %[[DK:.*]], %[[DV:.*]] = kiln.attention_grad %[[G]], %[[D]], %[[D]], %[[D]], %[[O]], %[[LSE]]
// CHECK: %[[S1:.*]] = kiln.add %[[DQ]], %[[DK]]
// CHECK: %[[S2:.*]] = kiln.add %[[S1]], %[[DV]]
// CHECK: %[[DD:.*]] = kiln.dropout %[[S2]] {rate = 1.000000e-01 : f64, seed = 7 : i64}
// CHECK: %[[DP:.*]] = kiln.reduce_sum %[[DD]] {axes = array<i64: 0>}
// CHECK: kiln.slice_grad %[[DP]], %[[WPE]] {axis = 0 : i64, start = 0 : i64} : tensor<?x8xf32>, tensor<16x8xf32>
// CHECK: kiln.embedding_grad %[[DD]], %arg0 {num_embeddings = 10 : i64} : tensor<?x?x8xf32>, tensor<?x?xi32> -> tensor<10x8xf32>
kiln.parameter @wte : tensor<10x8xf32> {init = "normal", init_args = array<f64: 0.02>}
kiln.parameter @wpe : tensor<16x8xf32> {init = "normal", init_args = array<f64: 0.02>}
func.func @loss(%ids: tensor<?x?xi32>, %t: tensor<?x?xi32>) -> tensor<f32> {
  %wte = kiln.param @wte : tensor<10x8xf32>
  %x = kiln.embedding %wte, %ids : tensor<10x8xf32>, tensor<?x?xi32> -> tensor<?x?x8xf32>
  %wpe = kiln.param @wpe : tensor<16x8xf32>
  %p = kiln.slice %wpe {axis = 0 : i64, start = 0 : i64, end = "T"} : tensor<16x8xf32> -> tensor<?x8xf32>
  %h = kiln.add %x, %p : tensor<?x?x8xf32>, tensor<?x8xf32> -> tensor<?x?x8xf32>
  %d = kiln.dropout %h {rate = 0.1 : f64, seed = 7 : i64} : tensor<?x?x8xf32>
  %o = kiln.attention %d, %d, %d {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.5 : f64, causal = true} : (tensor<?x?x8xf32>, tensor<?x?x8xf32>, tensor<?x?x8xf32>) -> tensor<?x?x8xf32>
  %l = kiln.cross_entropy %o, %t : tensor<?x?x8xf32>, tensor<?x?xi32> -> tensor<f32>
  return %l : tensor<f32>
}
