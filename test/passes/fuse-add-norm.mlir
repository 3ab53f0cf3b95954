// RUN: kiln-opt %s --kiln-fuse-add-norm --split-input-file | FileCheck %s

// The residual add and the layernorm become one op; the sum stays available
// to the add's other users.
kiln.parameter @ln.weight : tensor<8xf32> {init = "ones"}
kiln.parameter @ln.bias : tensor<8xf32> {init = "zeros"}
// CHECK-LABEL: func.func @block
// CHECK: %[[SUM:.*]], %[[Y:.*]] = kiln.add_norm %arg0, %arg1, %{{.*}} bias %{{.*}} {eps = 1.000000e-05 : f64, kind = #kiln<norm layernorm>}
// CHECK-NOT: kiln.layernorm
// CHECK: return %[[SUM]], %[[Y]]
func.func @block(%x: tensor<?x?x8xf32>, %r: tensor<?x?x8xf32>) -> (tensor<?x?x8xf32>, tensor<?x?x8xf32>) {
  %s = kiln.add %x, %r : tensor<?x?x8xf32>, tensor<?x?x8xf32> -> tensor<?x?x8xf32>
  %g = kiln.param @ln.weight : tensor<8xf32>
  %b = kiln.param @ln.bias : tensor<8xf32>
  %y = kiln.layernorm %s, %g, %b {eps = 1.0e-05 : f64} : tensor<?x?x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<?x?x8xf32>
  return %s, %y : tensor<?x?x8xf32>, tensor<?x?x8xf32>
}

// -----

// CHECK-LABEL: func.func @rms
// CHECK: %{{.*}}, %[[Y:.*]] = kiln.add_norm %arg0, %arg1, %arg2 {{{.*}}kind = #kiln<norm rmsnorm>}
// CHECK: return %[[Y]]
func.func @rms(%x: tensor<?x?x8xf32>, %r: tensor<?x?x8xf32>, %w: tensor<8xf32>) -> tensor<?x?x8xf32> {
  %s = kiln.add %x, %r : tensor<?x?x8xf32>, tensor<?x?x8xf32> -> tensor<?x?x8xf32>
  %y = kiln.rmsnorm %s, %w {eps = 1.0e-06 : f64} : tensor<?x?x8xf32>, tensor<8xf32> -> tensor<?x?x8xf32>
  return %y : tensor<?x?x8xf32>
}

// -----

// A broadcast add is left alone.
// CHECK-LABEL: func.func @broadcast
// CHECK: kiln.add
// CHECK: kiln.rmsnorm
func.func @broadcast(%x: tensor<?x?x8xf32>, %r: tensor<8xf32>, %w: tensor<8xf32>) -> tensor<?x?x8xf32> {
  %s = kiln.add %x, %r : tensor<?x?x8xf32>, tensor<8xf32> -> tensor<?x?x8xf32>
  %y = kiln.rmsnorm %s, %w {eps = 1.0e-06 : f64} : tensor<?x?x8xf32>, tensor<8xf32> -> tensor<?x?x8xf32>
  return %y : tensor<?x?x8xf32>
}
