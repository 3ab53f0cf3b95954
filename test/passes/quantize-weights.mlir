// kiln-quantize-weights: by default every matrix that only feeds matmuls
// (as the right-hand side) is quantized and frozen; an embedding table that
// the output projection shares, a bias and a weight read elsewhere are not.
// Globs select parameters (an embedding table too: its rows are
// dequantized as they are gathered), and a selected one that cannot be
// quantized is an error at the use that stops it.
// RUN: kiln-opt %s --kiln-quantize-weights="format=nf4" | FileCheck %s --check-prefix=NF4
// RUN: kiln-opt %s --kiln-quantize-weights="format=int4:group=4 params=fc*" | FileCheck %s --check-prefix=GLOB
// RUN: kiln-opt %s --kiln-quantize-weights="format=int8" --kiln-autodiff="function=loss" | FileCheck %s --check-prefix=GRAD
// RUN: kiln-opt %s --kiln-quantize-weights="format=int8 params=wte" | FileCheck %s --check-prefix=TIED
// RUN: not kiln-opt %s --kiln-quantize-weights="format=int8 params=other" 2>&1 | FileCheck %s --check-prefix=OTHER
// RUN: not kiln-opt %s --kiln-quantize-weights="format=int8 params=b" 2>&1 | FileCheck %s --check-prefix=VECTOR
// RUN: kiln-opt %s --kiln-quantize-weights="format=int8 params=*" | FileCheck %s --check-prefix=WILD
// RUN: not kiln-opt %s --kiln-quantize-weights="format=int8 params=nothing*" 2>&1 | FileCheck %s --check-prefix=NONE
// RUN: not kiln-opt %s --kiln-quantize-weights="format=int5" 2>&1 | FileCheck %s --check-prefix=BAD

// NF4: kiln.parameter @wte : tensor<10x8xf32> {init = "normal", init_args = array<f64: 2.000000e-02>}
// NF4: kiln.parameter @fc1 : tensor<16x8xf32> {frozen, init = "normal", init_args = array<f64: 2.000000e-02>, quant = "nf4:block=64,double=true"}
// NF4: kiln.parameter @fc2 : tensor<8x16xf32> {frozen, init = "normal", init_args = array<f64: 2.000000e-02>, quant = "nf4:block=64,double=true"}
// NF4: kiln.parameter @b : tensor<16xf32> {init = "zeros"}
// NF4: kiln.parameter @other : tensor<8x8xf32> {init = "normal", init_args = array<f64: 2.000000e-02>}
// GLOB: @wte : tensor<10x8xf32> {init
// GLOB: @fc1 : tensor<16x8xf32> {frozen, {{.*}}quant = "int4:group=4"}
// GLOB: @fc2 : tensor<8x16xf32> {frozen, {{.*}}quant = "int4:group=4"}
// GLOB: @other : tensor<8x8xf32> {init
// The input's gradient still reads the quantized weight as a matmul's
// right-hand side.
// GRAD-LABEL: func.func @loss_grad
// GRAD: %[[W:.*]] = kiln.param @fc2
// GRAD: kiln.matmul %{{.*}}, %[[W]] : tensor<?x8xf32>, tensor<8x16xf32>
// TIED: kiln.parameter @wte : tensor<10x8xf32> {frozen, {{.*}}quant = "int8"}
// TIED: kiln.parameter @fc1 : tensor<16x8xf32> {init
// OTHER: error: kiln-quantize-weights: 'kiln.mul' reads parameter 'other'; quantized weights feed matmuls (as the right-hand side) and embeddings only
// OTHER: note: the parameter is declared here
// VECTOR: error: kiln-quantize-weights: parameter 'b' is 'tensor<16xf32>'; only f32 matrices that feed matmuls are quantized
// A wildcard skips what cannot be quantized (the vector b, `other`).
// WILD: kiln.parameter @wte : tensor<10x8xf32> {frozen, {{.*}}quant = "int8"}
// WILD: kiln.parameter @fc1 : tensor<16x8xf32> {frozen, {{.*}}quant = "int8"}
// WILD: kiln.parameter @fc2 : tensor<8x16xf32> {frozen, {{.*}}quant = "int8"}
// WILD: kiln.parameter @b : tensor<16xf32> {init = "zeros"}
// WILD: kiln.parameter @other : tensor<8x8xf32> {init
// NONE: error: kiln-quantize-weights: no parameter the selection matches can be quantized
// BAD: error: kiln-quantize-weights: unknown quantization 'int5' (expected int8, int4 or nf4)

kiln.parameter @wte : tensor<10x8xf32> {init = "normal", init_args = array<f64: 0.02>}
kiln.parameter @fc1 : tensor<16x8xf32> {init = "normal", init_args = array<f64: 0.02>}
kiln.parameter @fc2 : tensor<8x16xf32> {init = "normal", init_args = array<f64: 0.02>}
kiln.parameter @b : tensor<16xf32> {init = "zeros"}
kiln.parameter @other : tensor<8x8xf32> {init = "normal", init_args = array<f64: 0.02>}

func.func @loss(%tok: tensor<?xi32>, %t: tensor<?xi32>) -> tensor<f32> {
  %wte = kiln.param @wte : tensor<10x8xf32>
  %fc1 = kiln.param @fc1 : tensor<16x8xf32>
  %fc2 = kiln.param @fc2 : tensor<8x16xf32>
  %b = kiln.param @b : tensor<16xf32>
  %o = kiln.param @other : tensor<8x8xf32>
  %x = kiln.embedding %wte, %tok : tensor<10x8xf32>, tensor<?xi32> -> tensor<?x8xf32>
  %h = kiln.matmul %x, %fc1 {transpose_b = true} : tensor<?x8xf32>, tensor<16x8xf32> -> tensor<?x16xf32>
  %hb = kiln.add %h, %b : tensor<?x16xf32>, tensor<16xf32> -> tensor<?x16xf32>
  %y = kiln.matmul %hb, %fc1 : tensor<?x16xf32>, tensor<16x8xf32> -> tensor<?x8xf32>
  %z = kiln.matmul %y, %fc2 : tensor<?x8xf32>, tensor<8x16xf32> -> tensor<?x16xf32>
  %zt = kiln.matmul %z, %fc2 {transpose_b = true} : tensor<?x16xf32>, tensor<8x16xf32> -> tensor<?x8xf32>
  %oo = kiln.mul %o, %o : tensor<8x8xf32>, tensor<8x8xf32> -> tensor<8x8xf32>
  %u = kiln.matmul %zt, %oo : tensor<?x8xf32>, tensor<8x8xf32> -> tensor<?x8xf32>
  %logits = kiln.matmul %u, %wte {transpose_b = true} : tensor<?x8xf32>, tensor<10x8xf32> -> tensor<?x10xf32>
  %l = kiln.cross_entropy %logits, %t : tensor<?x10xf32>, tensor<?xi32> -> tensor<f32>
  return %l : tensor<f32>
}
