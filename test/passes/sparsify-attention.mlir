// kiln-sparsify-attention: every selected attention op gets the pattern,
// causal flags stay, `dense` removes a pattern, and autodiff carries the
// pattern into attention_grad.
// RUN: kiln-opt %s --kiln-sparsify-attention="pattern=sliding_window:512,global_tokens=2" | FileCheck %s --check-prefix=ALL
// RUN: kiln-opt %s --kiln-sparsify-attention="pattern=block_sparse:block=64,local=1,global=1,random=3,seed=9 functions=loss" | FileCheck %s --check-prefix=FN
// RUN: kiln-opt %s --kiln-sparsify-attention="pattern=strided:128 blocks=h.1-2" | FileCheck %s --check-prefix=BLOCKS
// RUN: kiln-opt %s --kiln-sparsify-attention="pattern=dense" | FileCheck %s --check-prefix=DENSE
// RUN: kiln-opt %s --kiln-sparsify-attention="pattern=fixed:128,8" --kiln-autodiff | FileCheck %s --check-prefix=GRAD
// RUN: not kiln-opt %s --kiln-sparsify-attention="pattern=sliding_window:0" 2>&1 | FileCheck %s --check-prefix=BAD
// RUN: not kiln-opt %s --kiln-sparsify-attention="pattern=sliding_window:8 functions=nope" 2>&1 | FileCheck %s --check-prefix=NOFN
// RUN: not kiln-opt %s --kiln-sparsify-attention="pattern=sliding_window:8 blocks=h.7" 2>&1 | FileCheck %s --check-prefix=NONE


kiln.parameter @w : tensor<2x8x16xf32> {init = "normal", init_args = array<f64: 1.0>}

// ALL-LABEL: func.func @forward
// ALL: kiln.attention {{.*}}{causal = true, {{.*}}pattern = #kiln.pattern<sliding_window, window = 512, global_tokens = 2>
// ALL: kiln.attention {{.*}}pattern = #kiln.pattern<sliding_window, window = 512, global_tokens = 2>
// FN-LABEL: func.func @forward
// FN-NOT: block_sparse
// FN-LABEL: func.func @loss
// FN: pattern = #kiln.pattern<block_sparse, block = 64, local = 1, global = 1, random = 3, seed = 9>
// BLOCKS-LABEL: func.func @forward
// BLOCKS-NEXT: kiln.param
// BLOCKS-NEXT: kiln.attention {{.*}}causal = true, num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 2.500000e-01 : f64}
// BLOCKS-NEXT: kiln.attention {{.*}}pattern = #kiln.pattern<strided, stride = 128>
// DENSE-NOT: pattern =
// GRAD-LABEL: func.func @loss_grad
// GRAD: kiln.attention {{.*}}pattern = #kiln.pattern<fixed, stride = 128, summary = 8>{{.*}}save_lse
// GRAD: kiln.attention_grad {{.*}}pattern = #kiln.pattern<fixed, stride = 128, summary = 8>
// BAD: error: kiln-sparsify-attention: sliding_window: 'window' must be positive, got 0
// NOFN: error: kiln-sparsify-attention: the model has no function 'nope'; it has: forward, loss
// NONE: error: kiln-sparsify-attention: no attention op is in the selected functions and blocks (pattern sliding_window:8)
func.func @forward() -> tensor<2x8x16xf32> {
  %w = kiln.param @w : tensor<2x8x16xf32>
  %a = kiln.attention %w, %w, %w {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64, causal = true} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32> loc(callsite("m.kiln":4:5 at "h.0"("m.kiln":3:5)))
  %b = kiln.attention %a, %a, %a {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64, pattern = #kiln.pattern<sliding_window, window = 4>} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32> loc(callsite("m.kiln":4:5 at "h.1"("m.kiln":3:5)))
  return %b : tensor<2x8x16xf32>
}

func.func @loss() -> tensor<f32> {
  %w = kiln.param @w : tensor<2x8x16xf32>
  %a = kiln.attention %w, %w, %w {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64, causal = true} : (tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x16xf32>
  %s = kiln.reduce_sum %a {axes = array<i64: 0, 1, 2>} : tensor<2x8x16xf32> -> tensor<f32>
  return %s : tensor<f32>
}
