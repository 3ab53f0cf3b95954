// kiln-lora: adapters A [r, in] (Kaiming-uniform, ±1/sqrt(in)) and B
// [out, r] (zeros) beside each linear layer's weight, x Wᵀ rewritten to
// x Wᵀ + (alpha/r) (x Aᵀ) Bᵀ, everything else frozen; the module records
// the adapters. After kiln-quantize-weights the base may be quantized.
// RUN: kiln-opt %s --kiln-lora="rank=2 alpha=4" | FileCheck %s
// RUN: kiln-opt %s --kiln-quantize-weights="format=nf4" --kiln-lora="rank=2 alpha=4 targets=fc2" --kiln-autodiff="function=loss" --canonicalize | FileCheck %s --check-prefix=QLORA
// RUN: not kiln-opt %s --kiln-lora="targets=wte" 2>&1 | FileCheck %s --check-prefix=EMBED
// RUN: not kiln-opt %s --kiln-lora="targets=b" 2>&1 | FileCheck %s --check-prefix=VECTOR
// RUN: not kiln-opt %s --kiln-lora="targets=x*" 2>&1 | FileCheck %s --check-prefix=NONE
// RUN: not kiln-opt %s --kiln-lora="rank=0" 2>&1 | FileCheck %s --check-prefix=RANK

// CHECK: module attributes {kiln.lora = {alpha = 4.000000e+00 : f64, rank = 2 : i64, targets = ["fc1", "fc2"]}}
// CHECK: kiln.parameter @wte : tensor<10x8xf32> {frozen,
// CHECK: kiln.parameter @fc1 : tensor<16x8xf32> {frozen,
// CHECK: kiln.parameter @fc1.lora_A.weight : tensor<2x8xf32> {init = "uniform", init_args = array<f64: -0.35355339059327373, 0.35355339059327373>}
// CHECK: kiln.parameter @fc1.lora_B.weight : tensor<16x2xf32> {init = "zeros"}
// CHECK: kiln.parameter @fc2 : tensor<8x16xf32> {frozen,
// CHECK: kiln.parameter @b : tensor<16xf32> {frozen,
// CHECK-LABEL: func.func @loss
// CHECK: %[[X:.*]] = kiln.embedding
// CHECK: %[[Y:.*]] = kiln.matmul %[[X]], %{{.*}} {transpose_b = true} : tensor<?x8xf32>, tensor<16x8xf32> -> tensor<?x16xf32>
// CHECK: %[[A:.*]] = kiln.param @fc1.lora_A.weight
// CHECK: %[[B:.*]] = kiln.param @fc1.lora_B.weight
// CHECK: %[[H:.*]] = kiln.matmul %[[X]], %[[A]] {transpose_b = true} : tensor<?x8xf32>, tensor<2x8xf32> -> tensor<?x2xf32>
// CHECK: %[[D:.*]] = kiln.matmul %[[H]], %[[B]] {transpose_b = true} : tensor<?x2xf32>, tensor<16x2xf32> -> tensor<?x16xf32>
// CHECK: %[[S:.*]] = kiln.constant dense<2.000000e+00> : tensor<f32>
// CHECK: %[[DS:.*]] = kiln.mul %[[D]], %[[S]]
// CHECK: kiln.add %[[Y]], %[[DS]]

// Only the adapters get gradient products; the quantized fc2 and the rest
// return zeros.
// QLORA: kiln.parameter @fc2 : tensor<8x16xf32> {frozen, {{.*}}quant = "nf4:block=64,double=true"}
// QLORA: kiln.parameter @fc2.lora_A.weight : tensor<2x16xf32>
// QLORA-LABEL: func.func @loss_grad
// QLORA-NOT: kiln.matmul {{.*}} {transpose_a = true} : tensor<?x16xf32>, tensor<?x8xf32> -> tensor<16x8xf32>
// QLORA: kiln.matmul {{.*}} {transpose_a = true} : tensor<?x8xf32>, tensor<?x2xf32> -> tensor<8x2xf32>
// QLORA: kiln.matmul {{.*}} {transpose_a = true} : tensor<?x2xf32>, tensor<?x16xf32> -> tensor<2x16xf32>

// EMBED: error: kiln-lora: 'kiln.embedding' reads parameter 'wte'; adapters go beside weights read only as linear layers read them (x Wᵀ)
// VECTOR: error: kiln-lora: parameter 'b' is 'tensor<16xf32>'; adapters go beside f32 matrices [out, in]
// NONE: error: kiln-lora: no parameter the targets match is a linear layer's weight
// RANK: error: kiln-lora: rank 0 is not from 1 to 4096

kiln.parameter @wte : tensor<10x8xf32> {init = "normal", init_args = array<f64: 0.02>}
kiln.parameter @fc1 : tensor<16x8xf32> {init = "normal", init_args = array<f64: 0.02>}
kiln.parameter @fc2 : tensor<8x16xf32> {init = "normal", init_args = array<f64: 0.02>}
kiln.parameter @b : tensor<16xf32> {init = "zeros"}

func.func @loss(%tok: tensor<?xi32>, %t: tensor<?xi32>) -> tensor<f32> {
  %wte = kiln.param @wte : tensor<10x8xf32>
  %fc1 = kiln.param @fc1 : tensor<16x8xf32>
  %fc2 = kiln.param @fc2 : tensor<8x16xf32>
  %b = kiln.param @b : tensor<16xf32>
  %x = kiln.embedding %wte, %tok : tensor<10x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
  %h = kiln.matmul %x, %fc1 {transpose_b = true} : tensor<?x8xf32>, tensor<16x8xf32> -> tensor<?x16xf32>
  %hb = kiln.add %h, %b : tensor<?x16xf32>, tensor<16xf32> -> tensor<?x16xf32>
  %y = kiln.matmul %hb, %fc2 {transpose_b = true} : tensor<?x16xf32>, tensor<8x16xf32> -> tensor<?x8xf32>
  %logits = kiln.matmul %y, %wte {transpose_b = true} : tensor<?x8xf32>, tensor<10x8xf32> -> tensor<?x10xf32>
  %l = kiln.cross_entropy %logits, %t : tensor<?x10xf32>, tensor<?xi32> -> tensor<f32>
  return %l : tensor<f32>
}
