// RUN: kiln-opt %s --kiln-fuse-matmul-reduce --split-input-file | FileCheck %s

// A linear layer's weight gradient: the batched product and its sum over the
// batch become one product over the flattened rows.
// CHECK-LABEL: func.func @weight_grad
// CHECK-NEXT: %[[W:.*]] = kiln.fused_matmul %arg0, %arg1 {reduce_batch = true, transpose_a = true} : (tensor<?x?x32xf32>, tensor<?x?x16xf32>) -> tensor<32x16xf32>
// CHECK-NEXT: return %[[W]]
func.func @weight_grad(%g: tensor<?x?x32xf32>, %x: tensor<?x?x16xf32>) -> tensor<32x16xf32> {
  %0 = kiln.matmul %g, %x {transpose_a = true} : tensor<?x?x32xf32>, tensor<?x?x16xf32> -> tensor<?x32x16xf32>
  %1 = kiln.reduce_sum %0 {axes = array<i64: 0>} : tensor<?x32x16xf32> -> tensor<32x16xf32>
  return %1 : tensor<32x16xf32>
}

// -----

// A sum over a non-batch axis is not a contraction: unchanged.
// CHECK-LABEL: func.func @not_batch
// CHECK: kiln.matmul
// CHECK: kiln.reduce_sum
func.func @not_batch(%g: tensor<4x8x32xf32>, %x: tensor<4x8x16xf32>) -> tensor<4x16xf32> {
  %0 = kiln.matmul %g, %x {transpose_a = true} : tensor<4x8x32xf32>, tensor<4x8x16xf32> -> tensor<4x32x16xf32>
  %1 = kiln.reduce_sum %0 {axes = array<i64: 1>} : tensor<4x32x16xf32> -> tensor<4x16xf32>
  return %1 : tensor<4x16xf32>
}
