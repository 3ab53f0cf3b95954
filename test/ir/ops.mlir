// Round trip of every kiln op through the parser and printer, twice.
// RUN: kiln-opt %s | kiln-opt | FileCheck %s

// CHECK-LABEL: module
// CHECK: kiln.parameter @wte : tensor<64x16xf32> {init = "normal", init_args = array<f64: 2.000000e-02>}
// CHECK: kiln.parameter @g : tensor<16xf32> {init = "ones"}
// CHECK: kiln.parameter @u : tensor<16xf32> {init = "uniform", init_args = array<f64: -1.000000e+00, 1.000000e+00>}
// CHECK: kiln.parameter @c : tensor<16xi32> {init = "constant", init_args = array<f64: 3.000000e+00>}
kiln.parameter @wte : tensor<64x16xf32> {init = "normal", init_args = array<f64: 0.02>}
kiln.parameter @g : tensor<16xf32> {init = "ones"}
kiln.parameter @z : tensor<16xf32> {init = "zeros"}
kiln.parameter @u : tensor<16xf32> {init = "uniform", init_args = array<f64: -1.0, 1.0>}
kiln.parameter @c : tensor<16xi32> {init = "constant", init_args = array<f64: 3.0>}

// CHECK-LABEL: func.func @all_ops
func.func @all_ops(%tok: tensor<?x?xi32>, %mask: tensor<?x?xi32>, %pos: tensor<?xi32>) -> tensor<f32> {
  // CHECK: %[[W:.*]] = kiln.param @wte : tensor<64x16xf32>
  %w = kiln.param @wte : tensor<64x16xf32>
  %g = kiln.param @g : tensor<16xf32>
  %z = kiln.param @z : tensor<16xf32>
  // CHECK: kiln.constant dense<5.000000e-01> : tensor<f32>
  %half = kiln.constant dense<0.5> : tensor<f32>
  // CHECK: %[[X:.*]] = kiln.embedding %[[W]], %{{.*}} : tensor<64x16xf32>, tensor<?x?xi32> -> tensor<?x?x16xf32>
  %x = kiln.embedding %w, %tok : tensor<64x16xf32>, tensor<?x?xi32> -> tensor<?x?x16xf32>
  // CHECK: kiln.matmul %[[X]], %[[W]] {transpose_b = true}
  %l = kiln.matmul %x, %w {transpose_b = true} : tensor<?x?x16xf32>, tensor<64x16xf32> -> tensor<?x?x64xf32>
  %m2 = kiln.matmul %w, %w {transpose_a = true} : tensor<64x16xf32>, tensor<64x16xf32> -> tensor<16x16xf32>
  // CHECK: kiln.add
  %a = kiln.add %x, %g : tensor<?x?x16xf32>, tensor<16xf32> -> tensor<?x?x16xf32>
  // CHECK: kiln.sub
  %s = kiln.sub %a, %z : tensor<?x?x16xf32>, tensor<16xf32> -> tensor<?x?x16xf32>
  // CHECK: kiln.mul
  %mu = kiln.mul %s, %half : tensor<?x?x16xf32>, tensor<f32> -> tensor<?x?x16xf32>
  // CHECK: kiln.div
  %dv = kiln.div %mu, %half : tensor<?x?x16xf32>, tensor<f32> -> tensor<?x?x16xf32>
  // CHECK: kiln.max
  %mx = kiln.max %dv, %half : tensor<?x?x16xf32>, tensor<f32> -> tensor<?x?x16xf32>
  // CHECK: kiln.min
  %mn = kiln.min %mx, %half : tensor<?x?x16xf32>, tensor<f32> -> tensor<?x?x16xf32>
  // CHECK: kiln.pow
  %pw = kiln.pow %mn, %half : tensor<?x?x16xf32>, tensor<f32> -> tensor<?x?x16xf32>
  // CHECK: kiln.neg
  %u0 = kiln.neg %pw : tensor<?x?x16xf32>
  // CHECK: kiln.exp
  %u1 = kiln.exp %u0 : tensor<?x?x16xf32>
  // CHECK: kiln.log
  %u2 = kiln.log %u1 : tensor<?x?x16xf32>
  // CHECK: kiln.sqrt
  %u3 = kiln.sqrt %u2 : tensor<?x?x16xf32>
  // CHECK: kiln.rsqrt
  %u4 = kiln.rsqrt %u3 : tensor<?x?x16xf32>
  // CHECK: kiln.tanh
  %u5 = kiln.tanh %u4 : tensor<?x?x16xf32>
  // CHECK: kiln.sigmoid
  %u6 = kiln.sigmoid %u5 : tensor<?x?x16xf32>
  // CHECK: kiln.relu
  %u7 = kiln.relu %u6 : tensor<?x?x16xf32>
  // CHECK: kiln.silu
  %u8 = kiln.silu %u7 : tensor<?x?x16xf32>
  // CHECK: kiln.gelu %{{.*}} {approximate = #kiln<gelu tanh>}
  %u9 = kiln.gelu %u8 {approximate = #kiln<gelu tanh>} : tensor<?x?x16xf32>
  // CHECK: kiln.gelu %{{.*}} : tensor
  %u10 = kiln.gelu %u9 : tensor<?x?x16xf32>
  // CHECK: kiln.cast %{{.*}} : tensor<?x?xi32> -> tensor<?x?xf32>
  %mf = kiln.cast %mask : tensor<?x?xi32> -> tensor<?x?xf32>
  // CHECK: kiln.reshape %{{.*}} {shape = ["B", "T", 2, 8]}
  %r = kiln.reshape %u10 {shape = ["B", "T", 2, 8]} : tensor<?x?x16xf32> -> tensor<?x?x2x8xf32>
  // CHECK: kiln.reshape %{{.*}} {shape = ["B*T", 16]}
  %flat = kiln.reshape %u10 {shape = ["B*T", 16]} : tensor<?x?x16xf32> -> tensor<?x16xf32>
  // CHECK: kiln.transpose %{{.*}} {perm = array<i64: 0, 2, 1, 3>}
  %t = kiln.transpose %r {perm = array<i64: 0, 2, 1, 3>} : tensor<?x?x2x8xf32> -> tensor<?x2x?x8xf32>
  // CHECK: kiln.slice %{{.*}} {axis = 0 : i64, end = "T", start = 0 : i64}
  %sl = kiln.slice %w {axis = 0 : i64, start = 0 : i64, end = "T"} : tensor<64x16xf32> -> tensor<?x16xf32>
  %sl2 = kiln.slice %w {axis = -1 : i64, start = 4 : i64, end = 12 : i64} : tensor<64x16xf32> -> tensor<64x8xf32>
  // CHECK: kiln.concat
  %cc = kiln.concat %sl2, %sl2 {axis = 1 : i64} : (tensor<64x8xf32>, tensor<64x8xf32>) -> tensor<64x16xf32>
  // CHECK: %{{.*}}:2 = kiln.split
  %p:2 = kiln.split %u10 {axis = -1 : i64} : tensor<?x?x16xf32> -> tensor<?x?x8xf32>, tensor<?x?x8xf32>
  // CHECK: kiln.reduce_sum
  %rs = kiln.reduce_sum %u10 {axes = array<i64: -1>, keepdim = true} : tensor<?x?x16xf32> -> tensor<?x?x1xf32>
  // CHECK: kiln.reduce_mean
  %rm = kiln.reduce_mean %u10 {axes = array<i64: 0, 1>} : tensor<?x?x16xf32> -> tensor<16xf32>
  // CHECK: kiln.reduce_max
  %rx = kiln.reduce_max %u10 {axes = array<i64: 2>} : tensor<?x?x16xf32> -> tensor<?x?xf32>
  // CHECK: kiln.layernorm
  %ln = kiln.layernorm %u10, %g, %z {eps = 1.0e-5 : f64} : tensor<?x?x16xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<?x?x16xf32>
  // CHECK: kiln.rmsnorm
  %rn = kiln.rmsnorm %ln, %g {eps = 1.0e-6 : f64} : tensor<?x?x16xf32>, tensor<16xf32> -> tensor<?x?x16xf32>
  // CHECK: kiln.softmax %{{.*}} {axis = -1 : i64}
  %sm = kiln.softmax %rn {axis = -1 : i64} : tensor<?x?x16xf32>
  // CHECK: kiln.dropout
  %dr = kiln.dropout %sm {rate = 0.1 : f64, seed = 7 : i64} : tensor<?x?x16xf32>
  // CHECK: kiln.rope %{{.*}} {head_dim = 8 : i64, theta = 1.000000e+04 : f64}
  %q = kiln.rope %dr {head_dim = 8 : i64, theta = 10000.0 : f64} : tensor<?x?x16xf32>
  // CHECK: kiln.rope %{{.*}} positions %{{.*}} : tensor<?xi32> {head_dim = 8 : i64, style = #kiln<rope half>
  %k = kiln.rope %dr positions %pos : tensor<?xi32> {head_dim = 8 : i64, theta = 10000.0 : f64, style = #kiln<rope half>} : tensor<?x?x16xf32>
  // CHECK: kiln.relative_position_bucket
  %bk = kiln.relative_position_bucket %q, %k {bidirectional = true, num_buckets = 32 : i64, max_distance = 128 : i64} : tensor<?x?x16xf32>, tensor<?x?x16xf32> -> tensor<?x?xi32>
  %bias = kiln.constant dense<0.0> : tensor<2x1x1xf32>
  // CHECK: kiln.attention %{{.*}}, %{{.*}}, %{{.*}} {causal = true
  %o = kiln.attention %q, %k, %dr {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.35 : f64, causal = true} : (tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>) -> tensor<?x?x16xf32>
  // CHECK: kiln.attention %{{.*}}, %{{.*}}, %{{.*}} mask %{{.*}} bias %{{.*}} {
  %o2 = kiln.attention %q, %p#0, %p#1 mask %mask bias %bias {num_heads = 2 : i64, num_kv_heads = 1 : i64, scale = 0.35 : f64} : (tensor<?x?x16xf32>, tensor<?x?x8xf32>, tensor<?x?x8xf32>, tensor<?x?xi32>, tensor<2x1x1xf32>) -> tensor<?x?x16xf32>
  // CHECK: kiln.cached_attention %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 3.500000e-01 : f64, window = 4 : i64}
  %cpos = kiln.constant dense<0> : tensor<2x3xi32>
  %clen = kiln.constant dense<3> : tensor<2xi32>
  %cq = kiln.constant dense<0.0> : tensor<2x3x16xf32>
  %kvc = kiln.constant dense<0.0> : tensor<2x8x16xf32>
  %ca = kiln.cached_attention %cq, %cq, %cq, %kvc, %kvc, %cpos, %clen {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.35 : f64, window = 4 : i64} : (tensor<2x3x16xf32>, tensor<2x3x16xf32>, tensor<2x3x16xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x3xi32>, tensor<2xi32>) -> tensor<2x3x16xf32>
  // Patterns print their parameters in the table's order.
  // CHECK: kiln.attention {{.*}}causal = true{{.*}}pattern = #kiln.pattern<sliding_window, window = 256, global_tokens = 2>
  %s3 = kiln.attention %q, %k, %dr {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.35 : f64, causal = true, pattern = #kiln.pattern<sliding_window, global_tokens = 2, window = 256>} : (tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>) -> tensor<?x?x16xf32>
  // CHECK: pattern = #kiln.pattern<block_sparse, block = 64, local = 1, global = 1, random = 3, seed = 0>
  %s4 = kiln.attention %q, %k, %dr {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.35 : f64, pattern = #kiln.pattern<block_sparse, block = 64, local = 1, global = 1, random = 3, seed = 0>} : (tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>) -> tensor<?x?x16xf32>
  // CHECK: pattern = #kiln.pattern<strided, stride = 128>
  %s5 = kiln.attention %q, %k, %dr {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.35 : f64, causal = true, pattern = #kiln.pattern<strided, stride = 128>} : (tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>) -> tensor<?x?x16xf32>
  // CHECK: pattern = #kiln.pattern<fixed, stride = 128, summary = 8>
  %s6 = kiln.attention %q, %k, %dr {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.35 : f64, pattern = #kiln.pattern<fixed, stride = 128, summary = 8>} : (tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>) -> tensor<?x?x16xf32>
  // CHECK: kiln.cross_entropy %{{.*}}, %{{.*}} {ignore_index = 0 : i64}
  %ce = kiln.cross_entropy %l, %tok {ignore_index = 0 : i64} : tensor<?x?x64xf32>, tensor<?x?xi32> -> tensor<f32>
  // CHECK: kiln.cross_entropy_grad %{{.*}}, %{{.*}}, %{{.*}} {ignore_index = 0 : i64}
  %dl = kiln.cross_entropy_grad %l, %tok, %ce {ignore_index = 0 : i64} : tensor<?x?x64xf32>, tensor<?x?xi32>, tensor<f32> -> tensor<?x?x64xf32>
  // CHECK: kiln.rope %{{.*}} {head_dim = 8 : i64, inverse = true, theta = 1.000000e+04 : f64}
  %qi = kiln.rope %q {head_dim = 8 : i64, theta = 10000.0 : f64, inverse = true} : tensor<?x?x16xf32>
  // CHECK: %{{.*}}, %[[LSE:.*]] = kiln.attention {{.*}} save_lse
  %o3, %lse = kiln.attention %q, %k, %dr {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.35 : f64, causal = true, save_lse} : (tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>) -> (tensor<?x?x16xf32>, tensor<?x2x?xf32>)
  // CHECK: kiln.attention_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[LSE]] {
  %dq, %dk, %dvv = kiln.attention_grad %o3, %q, %k, %dr, %o3, %lse {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.35 : f64, causal = true} : (tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x2x?xf32>) -> (tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>)
  // CHECK: kiln.attention_grad {{.*}} mask %{{.*}} bias %{{.*}} {
  %dq2, %dk2, %dv2, %db = kiln.attention_grad %o3, %q, %k, %dr, %o3, %lse mask %mask bias %bias {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.35 : f64} : (tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x2x?xf32>, tensor<?x?xi32>, tensor<2x1x1xf32>) -> (tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<2x1x1xf32>)
  // CHECK: kiln.embedding_grad %{{.*}}, %{{.*}} {num_embeddings = 64 : i64}
  %de = kiln.embedding_grad %dq, %tok {num_embeddings = 64 : i64} : tensor<?x?x16xf32>, tensor<?x?xi32> -> tensor<64x16xf32>
  // CHECK: kiln.activation_grad %{{.*}}, %{{.*}} {kind = #kiln<activation gelu>} : tensor<?x?x16xf32>
  %da = kiln.activation_grad %dq, %q {kind = #kiln<activation gelu>} : tensor<?x?x16xf32>
  // CHECK: kiln.slice_grad %{{.*}}, %{{.*}} {axis = 1 : i64, start = 2 : i64} : tensor<?x?x16xf32>, tensor<?x?x16xf32>
  %ds = kiln.slice_grad %da, %q {axis = 1 : i64, start = 2 : i64} : tensor<?x?x16xf32>, tensor<?x?x16xf32>
  // CHECK: kiln.reshape_like %{{.*}}, %{{.*}} : tensor<?x?x16xf32>, tensor<?x?x2x8xf32>
  %h4 = kiln.reshape %q {shape = ["B", "T", 2, 8]} : tensor<?x?x16xf32> -> tensor<?x?x2x8xf32>
  %dh = kiln.reshape_like %ds, %h4 : tensor<?x?x16xf32>, tensor<?x?x2x8xf32>
  // CHECK: kiln.zeros_like %{{.*}} : tensor<?x?x2x8xf32>
  %zl = kiln.zeros_like %dh : tensor<?x?x2x8xf32>
  // CHECK: kiln.reduce_grad %{{.*}}, %{{.*}} {axes = array<i64: -1>, keepdim = true, kind = #kiln<reduce max>}
  %mxq = kiln.reduce_max %q {axes = array<i64: -1>, keepdim = true} : tensor<?x?x16xf32> -> tensor<?x?x1xf32>
  %dmx = kiln.reduce_grad %mxq, %q {kind = #kiln<reduce max>, axes = array<i64: -1>, keepdim = true} : tensor<?x?x1xf32>, tensor<?x?x16xf32>
  // CHECK: kiln.concat_grad %{{.*}}, %{{.*}}, %{{.*}} {axis = -1 : i64}
  %c1, %c2 = kiln.concat_grad %q, %p#0, %p#1 {axis = -1 : i64} : (tensor<?x?x16xf32>, tensor<?x?x8xf32>, tensor<?x?x8xf32>) -> (tensor<?x?x8xf32>, tensor<?x?x8xf32>)
  // CHECK: %[[N:.*]] = kiln.global_norm %{{.*}}, %{{.*}} : tensor<64x16xf32>, tensor<?x?x16xf32> -> tensor<f32>
  %gn = kiln.global_norm %de, %dq : tensor<64x16xf32>, tensor<?x?x16xf32> -> tensor<f32>
  // CHECK: kiln.optimizer_update %{{.*}}, %{{.*}}, %[[N]], %{{.*}}, %{{.*}} {beta1
  kiln.optimizer_update %w, %de, %gn, %ce, %ce {kind = #kiln<optimizer adamw>, beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-8 : f64, weight_decay = 0.1 : f64, momentum = 0.0 : f64, max_norm = 1.0 : f64} : tensor<64x16xf32>, tensor<64x16xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  return %ce : tensor<f32>
}
