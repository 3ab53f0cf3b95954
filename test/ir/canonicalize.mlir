// RUN: kiln-opt %s --canonicalize --split-input-file | FileCheck %s

// A transpose of the last two dimensions folds into matmul's flags.
// CHECK-LABEL: func.func @tied_classifier
// CHECK-NOT: kiln.transpose
// CHECK: kiln.matmul %arg0, %arg1 {transpose_b = true}
func.func @tied_classifier(%x: tensor<?x?x8xf32>, %w: tensor<50x8xf32>) -> tensor<?x?x50xf32> {
  %t = kiln.transpose %w {perm = array<i64: 1, 0>} : tensor<50x8xf32> -> tensor<8x50xf32>
  %y = kiln.matmul %x, %t : tensor<?x?x8xf32>, tensor<8x50xf32> -> tensor<?x?x50xf32>
  return %y : tensor<?x?x50xf32>
}

// -----

// Both operands, and a flag that was already set flips back.
// CHECK-LABEL: func.func @both
// CHECK: kiln.matmul %arg0, %arg1 {transpose_a = true} : tensor<2x8x4xf32>, tensor<2x8x5xf32>
func.func @both(%a: tensor<2x8x4xf32>, %b: tensor<2x8x5xf32>) -> tensor<2x4x5xf32> {
  %ta = kiln.transpose %a {perm = array<i64: 0, 2, 1>} : tensor<2x8x4xf32> -> tensor<2x4x8xf32>
  %tb = kiln.transpose %b {perm = array<i64: 0, 2, 1>} : tensor<2x8x5xf32> -> tensor<2x5x8xf32>
  %y = kiln.matmul %ta, %tb {transpose_b = true} : tensor<2x4x8xf32>, tensor<2x5x8xf32> -> tensor<2x4x5xf32>
  return %y : tensor<2x4x5xf32>
}

// -----

// Other permutations are real data movement and stay.
// CHECK-LABEL: func.func @batch_permutation
// CHECK: kiln.transpose
// CHECK: kiln.matmul
func.func @batch_permutation(%a: tensor<3x2x4x8xf32>, %b: tensor<2x3x8x5xf32>) -> tensor<2x3x4x5xf32> {
  %ta = kiln.transpose %a {perm = array<i64: 1, 0, 2, 3>} : tensor<3x2x4x8xf32> -> tensor<2x3x4x8xf32>
  %y = kiln.matmul %ta, %b : tensor<2x3x4x8xf32>, tensor<2x3x8x5xf32> -> tensor<2x3x4x5xf32>
  return %y : tensor<2x3x4x5xf32>
}
