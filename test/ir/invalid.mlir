// Every verifier message of the kiln dialect, one case per split.
// RUN: kiln-opt %s -split-input-file -verify-diagnostics

// expected-error @+1 {{parameter 'p' must have a static shape}}
kiln.parameter @p : tensor<?x4xf32> {init = "zeros"}

// -----

// expected-error @+1 {{unknown initializer 'xavier'; expected zeros, ones, normal, uniform or constant}}
kiln.parameter @p : tensor<4xf32> {init = "xavier"}

// -----

// expected-error @+1 {{initializer 'normal' takes 1 argument(s), got 0}}
kiln.parameter @p : tensor<4xf32> {init = "normal"}

// -----

// expected-error @+1 {{initializer 'normal' needs a floating-point parameter}}
kiln.parameter @p : tensor<4xi32> {init = "normal", init_args = array<f64: 0.1>}

// -----

// expected-error @+1 {{normal initializer needs a positive standard deviation, got 0}}
kiln.parameter @p : tensor<4xf32> {init = "normal", init_args = array<f64: 0.0>}

// -----

// expected-error @+1 {{uniform initializer needs low < high}}
kiln.parameter @p : tensor<4xf32> {init = "uniform", init_args = array<f64: 1.0, -1.0>}

// -----

func.func @f6() {
  // expected-error @+1 {{'@missing' does not name a kiln.parameter in this module}}
  %w = kiln.param @missing : tensor<4xf32>
  return
}

// -----

kiln.parameter @p : tensor<4xf32> {init = "zeros"}
func.func @f7() {
  // expected-error @+1 {{result type 'tensor<5xf32>' differs from the declared type 'tensor<4xf32>' of parameter '@p'}}
  %w = kiln.param @p : tensor<5xf32>
  return
}

// -----

func.func @f8(%a: tensor<4x8x2xf32>, %i: tensor<?xi32>) {
  // expected-error @+2 {{table must have rank 2 [V, D], got 'tensor<4x8x2xf32>'}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.embedding %a, %i : tensor<4x8x2xf32>, tensor<?xi32> -> tensor<?x2xf32>
  return
}

// -----

func.func @f9(%a: tensor<8xf32>, %b: tensor<8x4xf32>) {
  // expected-error @+2 {{lhs must have rank >= 2, got 'tensor<8xf32>'}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.matmul %a, %b : tensor<8xf32>, tensor<8x4xf32> -> tensor<4xf32>
  return
}

// -----

func.func @f10(%a: tensor<4x8xf32>, %b: tensor<8xf32>) {
  // expected-error @+2 {{rhs must have rank >= 2, got 'tensor<8xf32>'}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.matmul %a, %b : tensor<4x8xf32>, tensor<8xf32> -> tensor<4xf32>
  return
}

// -----

func.func @f11(%a: tensor<4x8xf32>, %b: tensor<8x4xf16>) {
  // expected-error @+2 {{operand element types differ: 'f32' vs 'f16'}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.matmul %a, %b : tensor<4x8xf32>, tensor<8x4xf16> -> tensor<4x4xf32>
  return
}

// -----

func.func @f12(%a: tensor<4x8xf32>, %b: tensor<7x4xf32>) {
  // expected-error @+2 {{contraction dimensions differ: lhs has K = 8, rhs has K = 7}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.matmul %a, %b : tensor<4x8xf32>, tensor<7x4xf32> -> tensor<4x4xf32>
  return
}

// -----

func.func @f13(%a: tensor<2x4x8xf32>, %b: tensor<3x8x4xf32>) {
  // expected-error @+2 {{batch dimensions [2] and [3] are not broadcast-compatible}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.matmul %a, %b : tensor<2x4x8xf32>, tensor<3x8x4xf32> -> tensor<2x4x4xf32>
  return
}

// -----

func.func @f14(%a: tensor<4x8xf32>, %b: tensor<8xi32>) {
  // expected-error @+2 {{operand element types differ: 'f32' vs 'i32'}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.add %a, %b : tensor<4x8xf32>, tensor<8xi32> -> tensor<4x8xf32>
  return
}

// -----

func.func @f15(%a: tensor<4x8xf32>, %b: tensor<4xf32>) {
  // expected-error @+2 {{operand shapes [4, 8] and [4] are not broadcast-compatible (dimension -1 differs)}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.mul %a, %b : tensor<4x8xf32>, tensor<4xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @f16(%a: tensor<4x8xf32>) {
  // expected-error @+2 {{inferred type(s) 'tensor<4x8xf32>' are incompatible with return type(s) of operation 'tensor<4x9xf32>'}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.add %a, %a : tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x9xf32>
  return
}

// -----

func.func @f17(%a: tensor<4x8xf32>) {
  // expected-error @+2 {{expected ::kiln::GeluApproximation to be one of: none, tanh}}
  // expected-error @+1 {{failed to parse Kiln_GeluApproximationAttr parameter 'value'}}
  %r = kiln.gelu %a {approximate = #kiln<gelu fast>} : tensor<4x8xf32>
  return
}

// -----

func.func @f18(%a: tensor<4x8xf32>) {
  // expected-error @+1 {{changes the shape from [4, 8] to [4]; a cast only converts the element type}}
  %r = kiln.cast %a : tensor<4x8xf32> -> tensor<4xi32>
  return
}

// -----

func.func @f19(%a: tensor<4x8xf32>) {
  // expected-error @+2 {{shape entry 1 must be positive, got 0}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.reshape %a {shape = [4, 0]} : tensor<4x8xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @f20(%a: tensor<?x8xf32>) {
  // expected-error @+2 {{shape entry 0: missing factor in 'B*'}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.reshape %a {shape = ["B*", 8]} : tensor<?x8xf32> -> tensor<?x8xf32>
  return
}

// -----

func.func @f21(%a: tensor<?x8xf32>) {
  // expected-error @+2 {{shape entry 0: empty dimension expression}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.reshape %a {shape = ["", 8]} : tensor<?x8xf32> -> tensor<?x8xf32>
  return
}

// -----

func.func @f22(%a: tensor<?x8xf32>) {
  // expected-error @+2 {{shape entry 0: factor '0' in '0*T' is not a positive integer}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.reshape %a {shape = ["0*T", 8]} : tensor<?x8xf32> -> tensor<?x8xf32>
  return
}

// -----

func.func @f23(%a: tensor<?x8xf32>) {
  // expected-error @+2 {{shape entry 0: factor 'B+T' in 'B+T' is not a name or a positive integer}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.reshape %a {shape = ["B+T", 8]} : tensor<?x8xf32> -> tensor<?x8xf32>
  return
}

// -----

func.func @f24(%a: tensor<?x8xf32>) {
  // expected-error @+2 {{shape entry 0 must be an integer or a dimension expression string}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.reshape %a {shape = [1.5, 8]} : tensor<?x8xf32> -> tensor<?x8xf32>
  return
}

// -----

func.func @f25(%a: tensor<4x8xf32>) {
  // expected-error @+2 {{changes the element count from 32 to 28}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.reshape %a {shape = [4, 7]} : tensor<4x8xf32> -> tensor<4x7xf32>
  return
}

// -----

func.func @f26(%a: tensor<4x8xf32>) {
  // expected-error @+2 {{perm has 1 entries for an input of rank 2}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.transpose %a {perm = array<i64: 0>} : tensor<4x8xf32> -> tensor<4xf32>
  return
}

// -----

func.func @f27(%a: tensor<4x8xf32>) {
  // expected-error @+2 {{perm [0, 0] is not a permutation of 0..1}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.transpose %a {perm = array<i64: 0, 0>} : tensor<4x8xf32> -> tensor<4x4xf32>
  return
}

// -----

func.func @f28(%a: tensor<4x8xf32>) {
  // expected-error @+2 {{axis 2 is out of range for rank 2}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.slice %a {axis = 2 : i64, start = 0 : i64, end = 1 : i64} : tensor<4x8xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @f29(%a: tensor<4x8xf32>) {
  // expected-error @+2 {{start must be >= 0, got -1}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.slice %a {axis = 0 : i64, start = -1 : i64, end = 1 : i64} : tensor<4x8xf32> -> tensor<2x8xf32>
  return
}

// -----

func.func @f30(%a: tensor<4x8xf32>) {
  // expected-error @+2 {{empty slice [3, 3)}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.slice %a {axis = 0 : i64, start = 3 : i64, end = 3 : i64} : tensor<4x8xf32> -> tensor<1x8xf32>
  return
}

// -----

func.func @f31(%a: tensor<4x8xf32>) {
  // expected-error @+2 {{end 5 exceeds the size 4 of axis 0}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.slice %a {axis = 0 : i64, start = 0 : i64, end = 5 : i64} : tensor<4x8xf32> -> tensor<5x8xf32>
  return
}

// -----

func.func @f32(%a: tensor<4x8xf32>) {
  // expected-error @+2 {{end: missing factor in 'T*'}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.slice %a {axis = 0 : i64, start = 0 : i64, end = "T*"} : tensor<4x8xf32> -> tensor<?x8xf32>
  return
}

// -----

func.func @f33(%a: tensor<4x8xf32>) {
  // expected-error @+2 {{start 4 is not below the size 4 of axis 0}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.slice %a {axis = 0 : i64, start = 4 : i64, end = "T"} : tensor<4x8xf32> -> tensor<?x8xf32>
  return
}

// -----

func.func @f34() {
  // expected-error @+2 {{needs at least one input}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = "kiln.concat"() {axis = 0 : i64} : () -> tensor<4xf32>
  return
}

// -----

func.func @f35(%a: tensor<4x8xf32>) {
  // expected-error @+2 {{axis 3 is out of range for rank 2}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.concat %a, %a {axis = 3 : i64} : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<8x8xf32>
  return
}

// -----

func.func @f36(%a: tensor<4x8xf32>, %b: tensor<8xf32>) {
  // expected-error @+2 {{input 1 has rank 1, expected 2}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.concat %a, %b {axis = 0 : i64} : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<8x8xf32>
  return
}

// -----

func.func @f37(%a: tensor<4x8xf32>, %b: tensor<4x8xf16>) {
  // expected-error @+2 {{input 1 has element type 'f16', expected 'f32'}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.concat %a, %b {axis = 0 : i64} : (tensor<4x8xf32>, tensor<4x8xf16>) -> tensor<8x8xf32>
  return
}

// -----

func.func @f38(%a: tensor<4x8xf32>, %b: tensor<4x7xf32>) {
  // expected-error @+2 {{input 1 has size 7 at dimension 1, expected 8}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.concat %a, %b {axis = 0 : i64} : (tensor<4x8xf32>, tensor<4x7xf32>) -> tensor<8x8xf32>
  return
}

// -----

func.func @f39(%a: tensor<4x8xf32>) {
  // expected-error @+1 {{axis 2 is out of range for rank 2}}
  %r:2 = kiln.split %a {axis = 2 : i64} : tensor<4x8xf32> -> tensor<4x4xf32>, tensor<4x4xf32>
  return
}

// -----

func.func @f40(%a: tensor<4x8xf32>) {
  // expected-error @+1 {{needs at least one result}}
  "kiln.split"(%a) {axis = 0 : i64} : (tensor<4x8xf32>) -> ()
  return
}

// -----

func.func @f41(%a: tensor<4x8xf32>) {
  // expected-error @+1 {{size 8 of axis 1 is not divisible into 3 equal parts}}
  %r:3 = kiln.split %a {axis = 1 : i64} : tensor<4x8xf32> -> tensor<4x2xf32>, tensor<4x2xf32>, tensor<4x2xf32>
  return
}

// -----

func.func @f42(%a: tensor<4x8xf32>) {
  // expected-error @+1 {{result 1 has type 'tensor<4x5xf32>', expected 'tensor<4x4xf32>'}}
  %r:2 = kiln.split %a {axis = 1 : i64} : tensor<4x8xf32> -> tensor<4x4xf32>, tensor<4x5xf32>
  return
}

// -----

func.func @f43(%a: tensor<4x8xf32>) {
  // expected-error @+2 {{axes must not be empty}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.reduce_sum %a {axes = array<i64>} : tensor<4x8xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @f44(%a: tensor<4x8xf32>) {
  // expected-error @+2 {{axis 2 is out of range for rank 2}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.reduce_mean %a {axes = array<i64: 2>} : tensor<4x8xf32> -> tensor<4xf32>
  return
}

// -----

func.func @f45(%a: tensor<4x8xf32>) {
  // expected-error @+2 {{axis -1 is listed more than once}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.reduce_max %a {axes = array<i64: 1, -1>} : tensor<4x8xf32> -> tensor<4xf32>
  return
}

// -----

func.func @f46(%s: tensor<f32>) {
  // expected-error @+2 {{input must have rank >= 1}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.layernorm %s, %s, %s {eps = 1.0e-5 : f64} : tensor<f32>, tensor<f32>, tensor<f32> -> tensor<f32>
  return
}

// -----

func.func @f47(%a: tensor<4x8xf32>, %w: tensor<4xf32>) {
  // expected-error @+2 {{weight must have shape [8] to match the last dimension of the input, got [4]}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.layernorm %a, %w, %w {eps = 1.0e-5 : f64} : tensor<4x8xf32>, tensor<4xf32>, tensor<4xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @f48(%a: tensor<4x8xf32>, %w: tensor<8xf32>, %h: tensor<8xf16>) {
  // expected-error @+2 {{bias has element type 'f16', expected 'f32'}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.layernorm %a, %w, %h {eps = 1.0e-5 : f64} : tensor<4x8xf32>, tensor<8xf32>, tensor<8xf16> -> tensor<4x8xf32>
  return
}

// -----

func.func @f49(%a: tensor<4x8xf32>, %w: tensor<8xf32>) {
  // expected-error @+2 {{eps must be positive, got 0}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.layernorm %a, %w, %w {eps = 0.0 : f64} : tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @f50(%s: tensor<f32>) {
  // expected-error @+2 {{input must have rank >= 1}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.rmsnorm %s, %s {eps = 1.0e-5 : f64} : tensor<f32>, tensor<f32> -> tensor<f32>
  return
}

// -----

func.func @f51(%a: tensor<4x8xf32>, %w: tensor<8x1xf32>) {
  // expected-error @+2 {{weight must have shape [8] to match the last dimension of the input, got [8, 1]}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.rmsnorm %a, %w {eps = 1.0e-5 : f64} : tensor<4x8xf32>, tensor<8x1xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @f52(%a: tensor<4x8xf32>, %w: tensor<8xf32>) {
  // expected-error @+2 {{eps must be positive, got -1}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.rmsnorm %a, %w {eps = -1.0 : f64} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @f53(%a: tensor<4x8xf32>) {
  // expected-error @+1 {{axis -3 is out of range for rank 2}}
  %r = kiln.softmax %a {axis = -3 : i64} : tensor<4x8xf32>
  return
}

// -----

func.func @f54(%a: tensor<4x8xf32>) {
  // expected-error @+1 {{rate must be in [0, 1), got 1}}
  %r = kiln.dropout %a {rate = 1.0 : f64, seed = 0 : i64} : tensor<4x8xf32>
  return
}

// -----

func.func @f55(%a: tensor<4x8xf32>) {
  // expected-error @+1 {{input must be [B, T, heads*head_dim], got 'tensor<4x8xf32>'}}
  %r = kiln.rope %a {head_dim = 8 : i64, theta = 1.0e4 : f64} : tensor<4x8xf32>
  return
}

// -----

func.func @f56(%x: tensor<2x4x16xf32>) {
  // expected-error @+1 {{head_dim must be a positive even number, got 7}}
  %r = kiln.rope %x {head_dim = 7 : i64, theta = 1.0e4 : f64} : tensor<2x4x16xf32>
  return
}

// -----

func.func @f57(%x: tensor<2x4x16xf32>) {
  // expected-error @+1 {{last dimension 16 is not a multiple of head_dim 6}}
  %r = kiln.rope %x {head_dim = 6 : i64, theta = 1.0e4 : f64} : tensor<2x4x16xf32>
  return
}

// -----

func.func @f58(%x: tensor<2x4x16xf32>) {
  // expected-error @+1 {{theta must be positive, got 0}}
  %r = kiln.rope %x {head_dim = 8 : i64, theta = 0.0 : f64} : tensor<2x4x16xf32>
  return
}

// -----

func.func @f59(%x: tensor<2x4x16xf32>) {
  // expected-error @+2 {{expected ::kiln::RopeStyle to be one of: interleaved, half}}
  // expected-error @+1 {{failed to parse Kiln_RopeStyleAttr parameter 'value'}}
  %r = kiln.rope %x {head_dim = 8 : i64, theta = 1.0e4 : f64, style = #kiln<rope gptj>} : tensor<2x4x16xf32>
  return
}

// -----

func.func @f60(%x: tensor<2x4x16xf32>, %p: tensor<5xi32>) {
  // expected-error @+1 {{positions must be [T] or [B, T] for an input [2, 4, 16], got [5]}}
  %r = kiln.rope %x positions %p : tensor<5xi32> {head_dim = 8 : i64, theta = 1.0e4 : f64} : tensor<2x4x16xf32>
  return
}

// -----

func.func @f61(%a: tensor<4x16xf32>, %q: tensor<2x4x16xf32>) {
  // expected-error @+2 {{query must be [B, T, heads*head_dim], got 'tensor<4x16xf32>'}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.attention %a, %q, %q {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64} : (tensor<4x16xf32>, tensor<2x4x16xf32>, tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  return
}

// -----

func.func @f62(%q: tensor<2x4x16xf32>, %h: tensor<2x4x16xf16>) {
  // expected-error @+2 {{query, key and value must have the same element type}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.attention %q, %h, %h {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64} : (tensor<2x4x16xf32>, tensor<2x4x16xf16>, tensor<2x4x16xf16>) -> tensor<2x4x16xf32>
  return
}

// -----

func.func @f63(%q: tensor<2x4x16xf32>) {
  // expected-error @+2 {{num_heads and num_kv_heads must be positive, got 0 and 2}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.attention %q, %q, %q {num_heads = 0 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64} : (tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  return
}

// -----

func.func @f64(%q: tensor<2x4x16xf32>) {
  // expected-error @+2 {{num_heads 4 is not a multiple of num_kv_heads 3}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.attention %q, %q, %q {num_heads = 4 : i64, num_kv_heads = 3 : i64, scale = 0.25 : f64} : (tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  return
}

// -----

func.func @f65(%q: tensor<2x4x16xf32>) {
  // expected-error @+2 {{query width 16 is not divisible by num_heads 3}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.attention %q, %q, %q {num_heads = 3 : i64, num_kv_heads = 3 : i64, scale = 0.25 : f64} : (tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  return
}

// -----

func.func @f66(%q: tensor<2x4x16xf32>, %k: tensor<2x4x12xf32>) {
  // expected-error @+2 {{key width 12 must be num_kv_heads * head_dim = 2 * 8 = 16}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.attention %q, %k, %k {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64} : (tensor<2x4x16xf32>, tensor<2x4x12xf32>, tensor<2x4x12xf32>) -> tensor<2x4x16xf32>
  return
}

// -----

func.func @f67(%q: tensor<2x4x16xf32>, %v: tensor<2x4x15xf32>) {
  // expected-error @+2 {{value width 15 is not divisible by num_kv_heads 2}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.attention %q, %q, %v {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64} : (tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4x15xf32>) -> tensor<2x4x16xf32>
  return
}

// -----

func.func @f68(%q: tensor<2x4x16xf32>, %k: tensor<3x4x16xf32>) {
  // expected-error @+2 {{batch sizes differ: query [2, 4, 16], key [3, 4, 16], value [3, 4, 16]}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.attention %q, %k, %k {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64} : (tensor<2x4x16xf32>, tensor<3x4x16xf32>, tensor<3x4x16xf32>) -> tensor<2x4x16xf32>
  return
}

// -----

func.func @f69(%q: tensor<2x4x16xf32>, %v: tensor<2x5x16xf32>) {
  // expected-error @+2 {{key and value lengths differ: 4 vs 5}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.attention %q, %q, %v {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64} : (tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x5x16xf32>) -> tensor<2x4x16xf32>
  return
}

// -----

func.func @f70(%q: tensor<2x4x16xf32>, %m: tensor<2x5xi32>) {
  // expected-error @+2 {{mask must be a [B, Tk] = [2, 4] key padding mask, got [2, 5]}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.attention %q, %q, %q mask %m {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64} : (tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x5xi32>) -> tensor<2x4x16xf32>
  return
}

// -----

func.func @f71(%q: tensor<2x4x16xf32>, %b: tensor<3x4x4xf32>) {
  // expected-error @+2 {{bias must broadcast to [B, H, Tq, Tk] = [2, 2, 4, 4], got [3, 4, 4]}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.attention %q, %q, %q bias %b {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64} : (tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<3x4x4xf32>) -> tensor<2x4x16xf32>
  return
}

// -----

func.func @f72(%q: tensor<2x4x16xf32>, %b: tensor<2x4x4xf16>) {
  // expected-error @+2 {{bias has element type 'f16', expected 'f32'}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.attention %q, %q, %q bias %b {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64} : (tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4x4xf16>) -> tensor<2x4x16xf32>
  return
}

// -----

func.func @f73(%q: tensor<2x4x16xf32>) {
  // expected-error @+2 {{scale must be positive, got 0}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.attention %q, %q, %q {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.0 : f64} : (tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  return
}

// -----

func.func @f74(%a: tensor<4xf32>) {
  // expected-error @+2 {{query and key must have rank >= 2 (dimension -2 is the sequence)}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.relative_position_bucket %a, %a {bidirectional = true, num_buckets = 32 : i64, max_distance = 128 : i64} : tensor<4xf32>, tensor<4xf32> -> tensor<?x?xi32>
  return
}

// -----

func.func @f75(%q: tensor<2x4x16xf32>) {
  // expected-error @+2 {{num_buckets must be positive, even and leave at least one exact bucket, got 3}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.relative_position_bucket %q, %q {bidirectional = true, num_buckets = 3 : i64, max_distance = 128 : i64} : tensor<2x4x16xf32>, tensor<2x4x16xf32> -> tensor<4x4xi32>
  return
}

// -----

func.func @f76(%q: tensor<2x4x16xf32>) {
  // expected-error @+2 {{max_distance must exceed the 16 exactly-bucketed distances, got 16}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.relative_position_bucket %q, %q {bidirectional = false, num_buckets = 32 : i64, max_distance = 16 : i64} : tensor<2x4x16xf32>, tensor<2x4x16xf32> -> tensor<4x4xi32>
  return
}

// -----

func.func @f77(%s: tensor<f32>, %i: tensor<i32>) {
  // expected-error @+2 {{logits must have a class dimension}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.cross_entropy %s, %i : tensor<f32>, tensor<i32> -> tensor<f32>
  return
}

// -----

func.func @f78(%a: tensor<4x8xf32>, %i: tensor<5xi32>) {
  // expected-error @+2 {{targets [5] must match the logits shape without the class dimension, [4]}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.cross_entropy %a, %i : tensor<4x8xf32>, tensor<5xi32> -> tensor<f32>
  return
}

// -----

func.func @f79(%a: tensor<4x8xf32>) {
  // expected-error @+1 {{operand #1 must be ranked tensor of 32-bit signless integer or 64-bit signless integer values}}
  %r = kiln.embedding %a, %a : tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x8x8xf32>
  return
}

// -----

func.func @ce_grad(%a: tensor<4x8xf32>, %i: tensor<5xi32>, %g: tensor<f32>) {
  // expected-error @+2 {{targets [5] must match the logits shape without the class dimension, [4]}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.cross_entropy_grad %a, %i, %g : tensor<4x8xf32>, tensor<5xi32>, tensor<f32> -> tensor<4x8xf32>
  return
}

// -----

func.func @ce_grad_scalar(%s: tensor<f32>, %i: tensor<i32>, %g: tensor<f32>) {
  // expected-error @+2 {{logits must have a class dimension}}
  // expected-error @+1 {{failed to infer returned types}}
  %r = kiln.cross_entropy_grad %s, %i, %g : tensor<f32>, tensor<i32>, tensor<f32> -> tensor<f32>
  return
}

// -----

func.func @f(%g: tensor<4x8xf32>, %x: tensor<4x8xf32>) {
  // expected-error @+1 {{attribute 'kind' failed to satisfy constraint: activation function}}
  %0 = kiln.activation_grad %g, %x {kind = "elu"} : tensor<4x8xf32>
  return
}

// -----

func.func @f(%g: tensor<4x8xf32>, %x: tensor<4x8xf32>) {
  // expected-error @+1 {{kind must be relu, gelu, gelu_tanh or silu, not none}}
  %0 = kiln.activation_grad %g, %x {kind = #kiln<activation none>} : tensor<4x8xf32>
  return
}

// -----

func.func @f(%g: tensor<4x8xf32>, %ids: tensor<5xi32>) {
  // expected-error @+2 {{gradient [4, 8] must be the indices' shape [5] followed by the embedding width}}
  // expected-error @+1 {{failed to infer returned types}}
  %0 = kiln.embedding_grad %g, %ids {num_embeddings = 10 : i64} : tensor<4x8xf32>, tensor<5xi32> -> tensor<10x8xf32>
  return
}

// -----

func.func @f(%g: tensor<4x8xf32>, %ids: tensor<4xi32>) {
  // expected-error @+2 {{num_embeddings must be positive, got 0}}
  // expected-error @+1 {{failed to infer returned types}}
  %0 = kiln.embedding_grad %g, %ids {num_embeddings = 0 : i64} : tensor<4x8xf32>, tensor<4xi32> -> tensor<0x8xf32>
  return
}

// -----

func.func @f(%g: tensor<3x8xf32>, %x: tensor<4x8xf32>) {
  // expected-error @+1 {{[2, 5) is outside dimension 0 of 'tensor<4x8xf32>'}}
  %0 = kiln.slice_grad %g, %x {axis = 0 : i64, start = 2 : i64} : tensor<3x8xf32>, tensor<4x8xf32>
  return
}

// -----

func.func @f(%g: tensor<3x8xf32>, %x: tensor<4x8xf32>) {
  // expected-error @+1 {{axis 2 is out of range for rank 2}}
  %0 = kiln.slice_grad %g, %x {axis = 2 : i64, start = 0 : i64} : tensor<3x8xf32>, tensor<4x8xf32>
  return
}

// -----

func.func @f(%g: tensor<3x7xf32>, %x: tensor<4x8xf32>) {
  // expected-error @+1 {{gradient 'tensor<3x7xf32>' does not match input 'tensor<4x8xf32>' outside the axis}}
  %0 = kiln.slice_grad %g, %x {axis = 0 : i64, start = 0 : i64} : tensor<3x7xf32>, tensor<4x8xf32>
  return
}

// -----

func.func @f(%g: tensor<3x8xf32>, %x: tensor<4x8xf32>) {
  // expected-error @+1 {{cannot reshape 'tensor<3x8xf32>' like 'tensor<4x8xf32>'}}
  %0 = kiln.reshape_like %g, %x : tensor<3x8xf32>, tensor<4x8xf32>
  return
}

// -----

func.func @f(%g: tensor<4xf32>, %x: tensor<4x8xf32>) {
  // expected-error @+2 {{expected ::kiln::ReduceKind to be one of: sum, mean, max}}
  // expected-error @+1 {{failed to parse Kiln_ReduceKindAttr parameter 'value'}}
  %0 = kiln.reduce_grad %g, %x {kind = #kiln<reduce min>, axes = array<i64: 1>} : tensor<4xf32>, tensor<4x8xf32>
  return
}

// -----

func.func @f(%g: tensor<8xf32>, %x: tensor<4x8xf32>) {
  // expected-error @+1 {{gradient 'tensor<8xf32>' does not match the reduction's result 'tensor<4xf32>'}}
  %0 = kiln.reduce_grad %g, %x {kind = #kiln<reduce sum>, axes = array<i64: 1>} : tensor<8xf32>, tensor<4x8xf32>
  return
}

// -----

func.func @f(%g: tensor<4x8xf32>, %a: tensor<4x3xf32>) {
  // expected-error @+1 {{needs one result per concatenated input}}
  %0, %1 = kiln.concat_grad %g, %a {axis = 1 : i64} : (tensor<4x8xf32>, tensor<4x3xf32>) -> (tensor<4x3xf32>, tensor<4x5xf32>)
  return
}

// -----

func.func @f(%g: tensor<4x8xf32>, %a: tensor<5x3xf32>) {
  // expected-error @+1 {{input 0 'tensor<5x3xf32>' does not match the gradient 'tensor<4x8xf32>' outside the axis}}
  %0 = kiln.concat_grad %g, %a {axis = 1 : i64} : (tensor<4x8xf32>, tensor<5x3xf32>) -> (tensor<5x3xf32>)
  return
}

// -----

func.func @f(%g: tensor<4x8xf32>, %a: tensor<4x3xf32>) {
  // expected-error @+1 {{result 0 has type 'tensor<4x4xf32>', expected 'tensor<4x3xf32>'}}
  %0 = kiln.concat_grad %g, %a {axis = 1 : i64} : (tensor<4x8xf32>, tensor<4x3xf32>) -> (tensor<4x4xf32>)
  return
}

// -----

func.func @f(%q: tensor<1x4x8xf32>, %lse: tensor<1x2x4xf32>) {
  // expected-error @+1 {{lse has type 'tensor<1x2x4xf32>', expected 'tensor<1x4x4xf32>'}}
  %0:3 = kiln.attention_grad %q, %q, %q, %q, %q, %lse {num_heads = 4 : i64, num_kv_heads = 4 : i64, scale = 0.5 : f64} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x2x4xf32>) -> (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>)
  return
}

// -----

func.func @f(%q: tensor<1x4x8xf32>, %k: tensor<1x4x6xf32>, %lse: tensor<1x2x4xf32>) {
  // expected-error @+1 {{key width 6 must be num_kv_heads * head_dim = 2 * 4 = 8}}
  %0:3 = kiln.attention_grad %q, %q, %k, %k, %q, %lse {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.5 : f64} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x6xf32>, tensor<1x4x6xf32>, tensor<1x4x8xf32>, tensor<1x2x4xf32>) -> (tensor<1x4x8xf32>, tensor<1x4x6xf32>, tensor<1x4x6xf32>)
  return
}

// -----

func.func @f(%q: tensor<1x4x8xf32>, %lse: tensor<1x2x4xf32>) {
  // expected-error @+1 {{the key gradient has type 'tensor<1x4x4xf32>', expected 'tensor<1x4x8xf32>'}}
  %0:3 = kiln.attention_grad %q, %q, %q, %q, %q, %lse {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.5 : f64} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x2x4xf32>) -> (tensor<1x4x8xf32>, tensor<1x4x4xf32>, tensor<1x4x8xf32>)
  return
}

// -----

func.func @f(%q: tensor<1x4x8xf32>, %lse: tensor<1x2x4xf32>, %b: tensor<2x4x4xf32>) {
  // expected-error @+1 {{has a bias gradient exactly when it has a bias}}
  %0:3 = kiln.attention_grad %q, %q, %q, %q, %q, %lse bias %b {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.5 : f64} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x2x4xf32>, tensor<2x4x4xf32>) -> (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>)
  return
}

// -----

func.func @f(%g: tensor<4xf32>, %n: tensor<f32>) {
  // expected-error @+1 {{updates a parameter: its first operand must come from kiln.param}}
  kiln.optimizer_update %g, %g, %n, %n, %n {kind = #kiln<optimizer adamw>, beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-8 : f64, weight_decay = 0.0 : f64, momentum = 0.0 : f64, max_norm = 1.0 : f64} : tensor<4xf32>, tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  return
}

// -----

kiln.parameter @p : tensor<4xf32> {init = "zeros"}
func.func @f(%g: tensor<5xf32>, %n: tensor<f32>) {
  %p = kiln.param @p : tensor<4xf32>
  // expected-error @+1 {{gradient 'tensor<5xf32>' does not match the parameter 'tensor<4xf32>'}}
  kiln.optimizer_update %p, %g, %n, %n, %n {kind = #kiln<optimizer adamw>, beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-8 : f64, weight_decay = 0.0 : f64, momentum = 0.0 : f64, max_norm = 1.0 : f64} : tensor<4xf32>, tensor<5xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  return
}

// -----

kiln.parameter @p : tensor<4xf32> {init = "zeros"}
func.func @f(%g: tensor<4xf32>, %n: tensor<f32>) {
  %p = kiln.param @p : tensor<4xf32>
  // expected-error @+2 {{expected ::kiln::OptimizerKind to be one of: adamw, sgd}}
  // expected-error @+1 {{failed to parse Kiln_OptimizerKindAttr parameter 'value'}}
  kiln.optimizer_update %p, %g, %n, %n, %n {kind = #kiln<optimizer lion>, beta1 = 0.9 : f64, beta2 = 0.999 : f64, eps = 1.0e-8 : f64, weight_decay = 0.0 : f64, momentum = 0.0 : f64, max_norm = 1.0 : f64} : tensor<4xf32>, tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  return
}

// -----

kiln.parameter @p : tensor<4xf32> {init = "zeros"}
func.func @f(%g: tensor<4xf32>, %n: tensor<f32>) {
  %p = kiln.param @p : tensor<4xf32>
  // expected-error @+1 {{betas and momentum must be in [0, 1), eps positive, weight_decay and max_norm non-negative}}
  kiln.optimizer_update %p, %g, %n, %n, %n {kind = #kiln<optimizer adamw>, beta1 = 1.0 : f64, beta2 = 0.999 : f64, eps = 1.0e-8 : f64, weight_decay = 0.0 : f64, momentum = 0.0 : f64, max_norm = 1.0 : f64} : tensor<4xf32>, tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>
  return
}

// -----

func.func @f() {
  // expected-error @+1 {{needs at least one operand}}
  %0 = "kiln.global_norm"() : () -> tensor<f32>
  return
}

// -----

func.func @f(%a: tensor<2x8x16xf32>, %w: tensor<32x16xf32>) {
  // expected-error @+2 {{expected ::kiln::Activation to be one of: none, relu, gelu, gelu_tanh, silu}}
  // expected-error @+1 {{failed to parse Kiln_ActivationAttr parameter 'value'}}
  %0 = kiln.fused_matmul %a, %w {transpose_b = true, activation = #kiln<activation swish>} : (tensor<2x8x16xf32>, tensor<32x16xf32>) -> tensor<2x8x32xf32>
  return
}

// -----

func.func @f(%a: tensor<2x8x16xf32>, %w: tensor<32x16xf32>, %b: tensor<16xf32>) {
  // expected-error @+2 {{bias must be [32] of the operands' element type, got 'tensor<16xf32>'}}
  // expected-error @+1 {{failed to infer returned types}}
  %0 = kiln.fused_matmul %a, %w bias %b {transpose_b = true} : (tensor<2x8x16xf32>, tensor<32x16xf32>, tensor<16xf32>) -> tensor<2x8x32xf32>
  return
}

// -----

func.func @f(%a: tensor<2x8x16xf32>, %w: tensor<32x16xf32>, %r: tensor<2x8x16xf32>) {
  // expected-error @+2 {{residual 'tensor<2x8x16xf32>' must have the result type 'tensor<2x8x32xf32>'}}
  // expected-error @+1 {{failed to infer returned types}}
  %0 = kiln.fused_matmul %a, %w residual %r {transpose_b = true} : (tensor<2x8x16xf32>, tensor<32x16xf32>, tensor<2x8x16xf32>) -> tensor<2x8x32xf32>
  return
}

// -----

func.func @f(%a: tensor<2x8x16xf32>, %b: tensor<2x16x4xf32>) {
  // expected-error @+2 {{reduce_batch needs transpose_a, no transpose_b and operands of one rank >= 3 with equal batch dimensions}}
  // expected-error @+1 {{failed to infer returned types}}
  %0 = kiln.fused_matmul %a, %b {reduce_batch = true} : (tensor<2x8x16xf32>, tensor<2x16x4xf32>) -> tensor<16x4xf32>
  return
}

// -----

func.func @f(%x: tensor<2x8xf32>, %w: tensor<8xf32>) {
  // expected-error @+2 {{layernorm takes a bias and rmsnorm none}}
  // expected-error @+1 {{failed to infer returned types}}
  %0:2 = kiln.add_norm %x, %x, %w {kind = #kiln<norm layernorm>, eps = 1.0e-5 : f64} : (tensor<2x8xf32>, tensor<2x8xf32>, tensor<8xf32>) -> (tensor<2x8xf32>, tensor<2x8xf32>)
  return
}

// -----

func.func @f(%x: tensor<2x8xf32>, %w: tensor<8xf32>) {
  // expected-error @+2 {{expected ::kiln::NormKind to be one of: layernorm, rmsnorm}}
  // expected-error @+1 {{failed to parse Kiln_NormKindAttr parameter 'value'}}
  %0:3 = kiln.norm_grad %x, %x, %w {kind = #kiln<norm batchnorm>, eps = 1.0e-5 : f64} : tensor<2x8xf32>, tensor<2x8xf32>, tensor<8xf32> -> tensor<2x8xf32>, tensor<8xf32>, tensor<8xf32>
  return
}

// -----

func.func @f(%x: tensor<2x8xf32>, %y: tensor<3xf32>) {
  // expected-error @+1 {{input 1 'tensor<3xf32>' does not broadcast to the result 'tensor<2x8xf32>'}}
  %0 = kiln.fused_elementwise %x, %y : tensor<2x8xf32>, tensor<3xf32> -> tensor<2x8xf32> {
  ^bb0(%a: tensor<f32>, %b: tensor<f32>):
    %m = kiln.mul %a, %b : tensor<f32>, tensor<f32> -> tensor<f32>
    kiln.yield %m : tensor<f32>
  }
  return
}

// -----

func.func @f(%x: tensor<2x8xf32>) {
  %0 = kiln.fused_elementwise %x : tensor<2x8xf32> -> tensor<2x8xf32> {
  ^bb0(%a: tensor<f32>):
    // expected-error @+1 {{is not an elementwise op a fused body may use}}
    %m = kiln.softmax %a {axis = 0 : i64} : tensor<f32>
    kiln.yield %m : tensor<f32>
  }
  return
}

// -----

func.func @f(%q: tensor<2x4x16xf32>) -> tensor<2x4x16xf32> {
  // expected-error @+1 {{unknown attention pattern 'longformer'; expected one of dense, sliding_window, block_sparse, strided, fixed}}
  %r = kiln.attention %q, %q, %q {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64, pattern = #kiln.pattern<longformer, window = 2>} : (tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  return %r : tensor<2x4x16xf32>
}

// -----

func.func @f(%q: tensor<2x4x16xf32>) -> tensor<2x4x16xf32> {
  // expected-error @+1 {{'sliding_window' has no parameter 'stride'; it takes window, global_tokens}}
  %r = kiln.attention %q, %q, %q {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64, pattern = #kiln.pattern<sliding_window, stride = 2>} : (tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  return %r : tensor<2x4x16xf32>
}

// -----

func.func @f(%q: tensor<2x4x16xf32>) -> tensor<2x4x16xf32> {
  // expected-error @+1 {{sliding_window: 'window' is required (keys within this distance of the query)}}
  %r = kiln.attention %q, %q, %q {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64, pattern = #kiln.pattern<sliding_window>} : (tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  return %r : tensor<2x4x16xf32>
}

// -----

func.func @f(%q: tensor<2x4x16xf32>) -> tensor<2x4x16xf32> {
  // expected-error @+1 {{block_sparse: 'block' must be a power of two, got 100}}
  %r = kiln.attention %q, %q, %q {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64, pattern = #kiln.pattern<block_sparse, block = 100>} : (tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  return %r : tensor<2x4x16xf32>
}

// -----

func.func @f(%q: tensor<2x4x16xf32>) -> tensor<2x4x16xf32> {
  // expected-error @+1 {{block_sparse: 'random' blocks need a 'seed' (random = 2)}}
  %r = kiln.attention %q, %q, %q {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64, pattern = #kiln.pattern<block_sparse, block = 64, random = 2>} : (tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  return %r : tensor<2x4x16xf32>
}

// -----

func.func @f(%q: tensor<2x4x16xf32>) -> tensor<2x4x16xf32> {
  // expected-error @+1 {{fixed: 'summary' (9) must not exceed 'stride' (4)}}
  %r = kiln.attention %q, %q, %q {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.25 : f64, pattern = #kiln.pattern<fixed, stride = 4, summary = 9>} : (tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  return %r : tensor<2x4x16xf32>
}

// -----

// expected-error @+1 {{parameter 'p' has quant = "int5": unknown quantization 'int5' (expected int8, int4 or nf4)}}
kiln.parameter @p : tensor<4x4xf32> {init = "zeros", frozen, quant = "int5"}

// -----

// expected-error @+1 {{parameter 'p' is quantized but not frozen; quantized weights are not trained}}
kiln.parameter @p : tensor<4x4xf32> {init = "zeros", quant = "int8"}

// -----

// expected-error @+1 {{parameter 'p' is quantized from f32 weights, not 'tensor<4x4xi32>'}}
kiln.parameter @p : tensor<4x4xi32> {init = "zeros", frozen, quant = "nf4"}

// -----

// expected-error @+1 {{parameter 'p' is 'tensor<4xf32>'; int4 quantizes matrices [out, in]}}
kiln.parameter @p : tensor<4xf32> {init = "zeros", frozen, quant = "int4:group=2"}

// -----

func.func @f(%q: tensor<2x3x8xf32>, %kc: tensor<2x16x4xf32>, %vc: tensor<2x16x8xf32>, %pos: tensor<2x3xi32>, %len: tensor<2xi32>) {
  // expected-error @+1 {{the key cache must be [B, S, 8] of 'f32', got 'tensor<2x16x4xf32>'}}
  %o = kiln.cached_attention %q, %q, %q, %kc, %vc, %pos, %len {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.5 : f64} : (tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x16x4xf32>, tensor<2x16x8xf32>, tensor<2x3xi32>, tensor<2xi32>) -> tensor<2x3x8xf32>
  return
}

// -----

func.func @f(%q: tensor<2x3x8xf32>, %kc: tensor<2x16x8xf32>, %vc: tensor<3x16x8xf32>, %pos: tensor<2x3xi32>, %len: tensor<2xi32>) {
  // expected-error @+1 {{the value cache must be [B, S, 8] of 'f32', got 'tensor<3x16x8xf32>'}}
  %o = kiln.cached_attention %q, %q, %q, %kc, %vc, %pos, %len {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.5 : f64} : (tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x16x8xf32>, tensor<3x16x8xf32>, tensor<2x3xi32>, tensor<2xi32>) -> tensor<2x3x8xf32>
  return
}

// -----

func.func @f(%q: tensor<2x3x8xf32>, %kc: tensor<2x16x8xf32>, %vc: tensor<2x12x8xf32>, %pos: tensor<2x3xi32>, %len: tensor<2xi32>) {
  // expected-error @+1 {{the key and value caches have different lengths: 16 and 12}}
  %o = kiln.cached_attention %q, %q, %q, %kc, %vc, %pos, %len {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.5 : f64} : (tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x16x8xf32>, tensor<2x12x8xf32>, tensor<2x3xi32>, tensor<2xi32>) -> tensor<2x3x8xf32>
  return
}

// -----

func.func @f(%q: tensor<2x3x8xf32>, %kc: tensor<2x16x8xf32>, %vc: tensor<2x16x8xf32>, %pos: tensor<2x4xi32>, %len: tensor<2xi32>) {
  // expected-error @+1 {{positions must be [B, T] = [2, 3], got 'tensor<2x4xi32>'}}
  %o = kiln.cached_attention %q, %q, %q, %kc, %vc, %pos, %len {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.5 : f64} : (tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x16x8xf32>, tensor<2x16x8xf32>, tensor<2x4xi32>, tensor<2xi32>) -> tensor<2x3x8xf32>
  return
}

// -----

func.func @f(%q: tensor<2x3x8xf32>, %kc: tensor<2x16x8xf32>, %vc: tensor<2x16x8xf32>, %pos: tensor<2x3xi32>, %len: tensor<3xi32>) {
  // expected-error @+1 {{lengths must be [B] = [2], got 'tensor<3xi32>'}}
  %o = kiln.cached_attention %q, %q, %q, %kc, %vc, %pos, %len {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.5 : f64} : (tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x16x8xf32>, tensor<2x16x8xf32>, tensor<2x3xi32>, tensor<3xi32>) -> tensor<2x3x8xf32>
  return
}

// -----

func.func @f(%q: tensor<2x3x8xf32>, %kc: tensor<2x16x8xf32>, %vc: tensor<2x16x8xf32>, %pos: tensor<2x3xi32>, %len: tensor<2xi32>) {
  // expected-error @+1 {{window must be >= 0 (0: none), got -1}}
  %o = kiln.cached_attention %q, %q, %q, %kc, %vc, %pos, %len {num_heads = 2 : i64, num_kv_heads = 2 : i64, scale = 0.5 : f64, window = -1 : i64} : (tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x16x8xf32>, tensor<2x16x8xf32>, tensor<2x3xi32>, tensor<2xi32>) -> tensor<2x3x8xf32>
  return
}

// -----

func.func @f(%q: tensor<2x3x8xf32>, %kc: tensor<2x16x8xf32>, %vc: tensor<2x16x8xf32>, %pos: tensor<2x3xi32>, %len: tensor<2xi32>) {
  // expected-error @+1 {{num_heads 3 is not a multiple of num_kv_heads 2}}
  %o = kiln.cached_attention %q, %q, %q, %kc, %vc, %pos, %len {num_heads = 3 : i64, num_kv_heads = 2 : i64, scale = 0.5 : f64} : (tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x16x8xf32>, tensor<2x16x8xf32>, tensor<2x3xi32>, tensor<2xi32>) -> tensor<2x3x8xf32>
  return
}
