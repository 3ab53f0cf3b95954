// RUN: kiln-opt %s --kiln-infer-shapes | FileCheck %s
// RUN: kiln-opt %s --pass-pipeline='builtin.module(kiln-frontend-pipeline)' | FileCheck %s

kiln.parameter @w : tensor<16x8xf32> {init = "normal", init_args = array<f64: 0.02>}

// With static argument shapes, every `?` the operands now determine becomes
// static, and the signature follows the returned value.
// CHECK-LABEL: func.func @bound(%arg0: tensor<2x5x8xf32>) -> tensor<2x5x16xf32>
func.func @bound(%x: tensor<2x5x8xf32>) -> tensor<?x?x16xf32> {
  %w = kiln.param @w : tensor<16x8xf32>
  // CHECK: kiln.matmul {{.*}} -> tensor<2x5x16xf32>
  %y = kiln.matmul %x, %w {transpose_b = true} : tensor<2x5x8xf32>, tensor<16x8xf32> -> tensor<?x?x16xf32>
  // CHECK: kiln.reduce_sum {{.*}} -> tensor<2x1x16xf32>
  %s = kiln.reduce_sum %y {axes = array<i64: 1>, keepdim = true} : tensor<?x?x16xf32> -> tensor<?x1x16xf32>
  // CHECK: kiln.add {{.*}} -> tensor<2x5x16xf32>
  %z = kiln.add %y, %s : tensor<?x?x16xf32>, tensor<?x1x16xf32> -> tensor<?x?x16xf32>
  return %z : tensor<?x?x16xf32>
}

// Dynamic arguments keep dynamic results.
// CHECK-LABEL: func.func @dynamic(%arg0: tensor<?x?x8xf32>) -> tensor<?x?x16xf32>
func.func @dynamic(%x: tensor<?x?x8xf32>) -> tensor<?x?x16xf32> {
  %w = kiln.param @w : tensor<16x8xf32>
  %y = kiln.matmul %x, %w {transpose_b = true} : tensor<?x?x8xf32>, tensor<16x8xf32> -> tensor<?x?x16xf32>
  return %y : tensor<?x?x16xf32>
}
