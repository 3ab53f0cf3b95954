// kiln-derive-decode: decode is forward with positions in the three places
// that see them (a position table, rope, causal self-attention, which reads
// and extends a cache); ops that mix positions otherwise are refused.
// RUN: kiln-opt %s --split-input-file --kiln-derive-decode="required=true" -verify-diagnostics | FileCheck %s
// RUN: kiln-opt %s --split-input-file --kiln-derive-decode | FileCheck %s --check-prefix=AUTO

// GPT-2's shape: a learned position table, a causal attention.
module attributes {kiln.dims = ["B", "T"]} {
  kiln.parameter @wte : tensor<32x16xf32> {init = "normal", init_args = array<f64: 1.0>}
  kiln.parameter @wpe : tensor<8x16xf32> {init = "normal", init_args = array<f64: 1.0>}
  kiln.parameter @c_attn : tensor<48x16xf32> {init = "normal", init_args = array<f64: 1.0>}
  // CHECK-LABEL: module attributes {kiln.dims = ["B", "T", "S"]}
  // CHECK-LABEL: func.func @forward
  // CHECK: kiln.slice
  // CHECK: kiln.attention
  // CHECK-LABEL: func.func @decode(
  // CHECK-SAME: %[[TOK:.*]]: tensor<?x?xi32> {kiln.dims = ["B", "T"], kiln.name = "tokens"},
  // CHECK-SAME: %[[POS:.*]]: tensor<?x?xi32> {kiln.dims = ["B", "T"], kiln.name = "positions"},
  // CHECK-SAME: %[[LEN:.*]]: tensor<?xi32> {kiln.dims = ["B"], kiln.name = "lengths"},
  // CHECK-SAME: %[[KC:.*]]: tensor<?x?x16xf32> {kiln.dims = ["B", "S", 16], kiln.name = "cache.0.key"},
  // CHECK-SAME: %[[VC:.*]]: tensor<?x?x16xf32> {kiln.dims = ["B", "S", 16], kiln.name = "cache.0.value"})
  // CHECK-SAME: -> (tensor<?x?x32xf32> {kiln.dims = ["B", "T", 32]})
  // CHECK: %[[WPE:.*]] = kiln.param @wpe
  // CHECK: kiln.embedding %[[WPE]], %[[POS]] : tensor<8x16xf32>, tensor<?x?xi32> -> tensor<?x?x16xf32>
  // CHECK-NOT: kiln.slice
  // CHECK: %[[QKV:.*]]:3 = kiln.split
  // CHECK: kiln.cached_attention %[[QKV]]#0, %[[QKV]]#1, %[[QKV]]#2, %[[KC]], %[[VC]], %[[POS]], %[[LEN]] {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 3.535530e-01 : f64}
  // CHECK-NOT: kiln.attention
  // AUTO-LABEL: func.func @decode(
  func.func @forward(%tokens: tensor<?x?xi32> {kiln.dims = ["B", "T"], kiln.name = "tokens"}) -> (tensor<?x?x32xf32> {kiln.dims = ["B", "T", 32]}) {
    %wte = kiln.param @wte : tensor<32x16xf32>
    %e = kiln.embedding %wte, %tokens : tensor<32x16xf32>, tensor<?x?xi32> -> tensor<?x?x16xf32>
    %wpe = kiln.param @wpe : tensor<8x16xf32>
    %p = kiln.slice %wpe {axis = 0 : i64, start = 0 : i64, end = "T"} : tensor<8x16xf32> -> tensor<?x16xf32>
    %x = kiln.add %e, %p : tensor<?x?x16xf32>, tensor<?x16xf32> -> tensor<?x?x16xf32>
    %w = kiln.param @c_attn : tensor<48x16xf32>
    %qkv = kiln.matmul %x, %w {transpose_b = true} : tensor<?x?x16xf32>, tensor<48x16xf32> -> tensor<?x?x48xf32>
    %s:3 = kiln.split %qkv {axis = 2 : i64} : tensor<?x?x48xf32> -> tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>
    %a = kiln.attention %s#0, %s#1, %s#2 {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.353553 : f64, causal = true} : (tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>) -> tensor<?x?x16xf32>
    %y = kiln.matmul %a, %wte {transpose_b = true} : tensor<?x?x16xf32>, tensor<32x16xf32> -> tensor<?x?x32xf32>
    return %y : tensor<?x?x32xf32>
  }
}

// -----

// Llama's shape: rope at the positions, grouped heads, a sliding window (a
// rolling cache), and a cross-attention to a fixed memory, left as it is.
module attributes {kiln.dims = ["B", "T", "S"]} {
  kiln.parameter @emb : tensor<32x16xf32> {init = "normal", init_args = array<f64: 1.0>}
  kiln.parameter @wk : tensor<8x16xf32> {init = "normal", init_args = array<f64: 1.0>}
  kiln.parameter @mem : tensor<1x4x8xf32> {init = "normal", init_args = array<f64: 1.0>}
  // CHECK-LABEL: module attributes {kiln.dims = ["B", "T", "S", "S_cache"]}
  // CHECK-LABEL: func.func @decode(
  // CHECK-SAME: %[[POS:[^:]*]]: tensor<?x?xi32> {kiln.dims = ["B", "T"], kiln.name = "positions"}
  // CHECK-SAME: {kiln.dims = ["B", "S_cache", 8], kiln.name = "cache.0.key"}
  // CHECK-SAME: {kiln.dims = ["B", "S_cache", 8], kiln.name = "cache.0.value"}
  // CHECK: kiln.rope %{{.*}} positions %[[POS]] : tensor<?x?xi32> {head_dim = 4 : i64
  // CHECK: kiln.rope %{{.*}} positions %[[POS]] : tensor<?x?xi32> {head_dim = 4 : i64
  // CHECK: kiln.cached_attention {{.*}}{num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 5.000000e-01 : f64, window = 3 : i64}
  // CHECK: kiln.attention {{.*}}{num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 5.000000e-01 : f64}
  // AUTO-LABEL: func.func @decode(
  func.func @forward(%ids: tensor<?x?xi64> {kiln.dims = ["B", "T"], kiln.name = "ids"}) -> (tensor<?x?x16xf32> {kiln.dims = ["B", "T", 16]}) {
    %emb = kiln.param @emb : tensor<32x16xf32>
    %x = kiln.embedding %emb, %ids : tensor<32x16xf32>, tensor<?x?xi64> -> tensor<?x?x16xf32>
    %wk = kiln.param @wk : tensor<8x16xf32>
    %k = kiln.matmul %x, %wk {transpose_b = true} : tensor<?x?x16xf32>, tensor<8x16xf32> -> tensor<?x?x8xf32>
    %q = kiln.rope %x {head_dim = 4 : i64, theta = 10000.0 : f64} : tensor<?x?x16xf32>
    %kr = kiln.rope %k {head_dim = 4 : i64, theta = 10000.0 : f64} : tensor<?x?x8xf32>
    %a = kiln.attention %q, %kr, %k {num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 0.5 : f64, causal = true, pattern = #kiln.pattern<sliding_window, window = 3>} : (tensor<?x?x16xf32>, tensor<?x?x8xf32>, tensor<?x?x8xf32>) -> tensor<?x?x16xf32>
    %mem = kiln.param @mem : tensor<1x4x8xf32>
    %c = kiln.attention %a, %mem, %mem {num_heads = 4 : i64, num_kv_heads = 2 : i64, scale = 0.5 : f64} : (tensor<?x?x16xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<?x?x16xf32>
    return %c : tensor<?x?x16xf32>
  }
}

// -----

// An attention that is not causal: no decode without `required`.
// AUTO-LABEL: module attributes {kiln.dims = ["B", "T"]}
// AUTO-NOT: func.func @decode
// AUTO: module attributes {kiln.dims = ["B", "T"]}
module attributes {kiln.dims = ["B", "T"]} {
  kiln.parameter @emb : tensor<32x16xf32> {init = "normal", init_args = array<f64: 1.0>}
  func.func @forward(%ids: tensor<?x?xi32> {kiln.dims = ["B", "T"], kiln.name = "ids"}) -> (tensor<?x?x16xf32> {kiln.dims = ["B", "T", 16]}) {
    %emb = kiln.param @emb : tensor<32x16xf32>
    %x = kiln.embedding %emb, %ids : tensor<32x16xf32>, tensor<?x?xi32> -> tensor<?x?x16xf32>
    // expected-error @+1 {{kiln-derive-decode: 'forward' cannot be decoded incrementally: it is not causal: every position sees later ones}}
    %a = kiln.attention %x, %x, %x {num_heads = 4 : i64, num_kv_heads = 4 : i64, scale = 0.5 : f64} : (tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>) -> tensor<?x?x16xf32>
    return %a : tensor<?x?x16xf32>
  }
}

// -----

module attributes {kiln.dims = ["B", "T"]} {
  kiln.parameter @emb : tensor<32x16xf32> {init = "normal", init_args = array<f64: 1.0>}
  func.func @forward(%ids: tensor<?x?xi32> {kiln.dims = ["B", "T"], kiln.name = "ids"}) -> (tensor<?x1x16xf32> {kiln.dims = ["B", 1, 16]}) {
    %emb = kiln.param @emb : tensor<32x16xf32>
    %x = kiln.embedding %emb, %ids : tensor<32x16xf32>, tensor<?x?xi32> -> tensor<?x?x16xf32>
    // expected-error @+1 {{'forward' cannot be decoded incrementally: it reduces over the batch or sequence axis}}
    %m = kiln.reduce_mean %x {axes = array<i64: 1>, keepdim = true} : tensor<?x?x16xf32> -> tensor<?x1x16xf32>
    return %m : tensor<?x1x16xf32>
  }
}

// -----

module attributes {kiln.dims = ["B", "T"]} {
  kiln.parameter @emb : tensor<32x16xf32> {init = "normal", init_args = array<f64: 1.0>}
  func.func @forward(%ids: tensor<?x?xi32> {kiln.dims = ["B", "T"], kiln.name = "ids"}, %mask: tensor<?x?xi32> {kiln.dims = ["B", "T"], kiln.name = "mask"}) -> (tensor<?x?x16xf32> {kiln.dims = ["B", "T", 16]}) {
    // expected-error @-1 {{'forward' cannot be decoded incrementally: none of its arguments are token ids [B, T] that reach a causal self-attention and share the result's sequence dimension}}
    %emb = kiln.param @emb : tensor<32x16xf32>
    %x = kiln.embedding %emb, %ids : tensor<32x16xf32>, tensor<?x?xi32> -> tensor<?x?x16xf32>
    return %x : tensor<?x?x16xf32>
  }
}

// -----

module attributes {kiln.dims = ["B", "T"]} {
  kiln.parameter @emb : tensor<32x16xf32> {init = "normal", init_args = array<f64: 1.0>}
  func.func @forward(%ids: tensor<?x?xi32> {kiln.dims = ["B", "T"], kiln.name = "ids"}) -> (tensor<?x?x16xf32> {kiln.dims = ["B", "T", 16]}) {
    %emb = kiln.param @emb : tensor<32x16xf32>
    %x = kiln.embedding %emb, %ids : tensor<32x16xf32>, tensor<?x?xi32> -> tensor<?x?x16xf32>
    // expected-error @+1 {{it has a key mask or an additive bias over positions}}
    %a = kiln.attention %x, %x, %x mask %ids {num_heads = 4 : i64, num_kv_heads = 4 : i64, scale = 0.5 : f64, causal = true} : (tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?xi32>) -> tensor<?x?x16xf32>
    return %a : tensor<?x?x16xf32>
  }
}

// -----

// Relative position buckets of the tokens serve only as a self-attention's
// bias.
module attributes {kiln.dims = ["B", "T"]} {
  kiln.parameter @emb : tensor<32x16xf32> {init = "normal", init_args = array<f64: 1.0>}
  kiln.parameter @rel : tensor<8x2xf32> {init = "normal", init_args = array<f64: 1.0>}
  func.func @forward(%ids: tensor<?x?xi32> {kiln.dims = ["B", "T"], kiln.name = "ids"}) -> (tensor<?x?x16xf32> {kiln.dims = ["B", "T", 16]}) {
    %emb = kiln.param @emb : tensor<32x16xf32>
    %x = kiln.embedding %emb, %ids : tensor<32x16xf32>, tensor<?x?xi32> -> tensor<?x?x16xf32>
    %b = kiln.relative_position_bucket %x, %x {bidirectional = false, max_distance = 12 : i64, num_buckets = 8 : i64} : tensor<?x?x16xf32>, tensor<?x?x16xf32> -> tensor<?x?xi32>
    %rel = kiln.param @rel : tensor<8x2xf32>
    %r = kiln.embedding %rel, %b : tensor<8x2xf32>, tensor<?x?xi32> -> tensor<?x?x2xf32>
    // expected-error @+1 {{'forward' cannot be decoded incrementally: relative position buckets of the tokens are decoded only as transpose(table(buckets), perm = [2, 0, 1]), the bias of a causal self-attention}}
    %s = kiln.reduce_sum %r {axes = array<i64: 2>, keepdim = false} : tensor<?x?x2xf32> -> tensor<?x?xf32>
    %a = kiln.attention %x, %x, %x {causal = true, num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 1.0 : f64} : (tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>) -> tensor<?x?x16xf32>
    return %a : tensor<?x?x16xf32>
  }
}

// -----

// An input along the decoded sequence besides the tokens (a padding mask)
// cannot be held for the whole decoding.
module attributes {kiln.dims = ["B", "T"]} {
  kiln.parameter @emb : tensor<32x16xf32> {init = "normal", init_args = array<f64: 1.0>}
  func.func @forward(%ids: tensor<?x?xi32> {kiln.dims = ["B", "T"], kiln.name = "ids"}, %mask: tensor<?x?xi32> {kiln.dims = ["B", "T"], kiln.name = "mask"}) -> (tensor<?x?x16xf32> {kiln.dims = ["B", "T", 16]}) {
    // expected-error @-1 {{'forward' cannot be decoded incrementally: it also takes 'mask' along the decoded sequence 'T', which decode cannot take one step at a time}}
    %emb = kiln.param @emb : tensor<32x16xf32>
    %x = kiln.embedding %emb, %ids : tensor<32x16xf32>, tensor<?x?xi32> -> tensor<?x?x16xf32>
    %a = kiln.attention %x, %x, %x mask %mask {causal = true, num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 1.0 : f64} : (tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x?xi32>) -> tensor<?x?x16xf32>
    return %a : tensor<?x?x16xf32>
  }
}
