//===- Passes.td - kiln passes -----------------------------*- tablegen -*-===//
#ifndef KILN_PASSES
#define KILN_PASSES

include "mlir/Pass/PassBase.td"

def InferShapes : Pass<"kiln-infer-shapes", "mlir::func::FuncOp"> {
  let summary = "Refine result types from operand types";
  let description = [{
    Re-runs every kiln op's shape inference in program order and replaces a
    result type by the inferred one wherever the inferred type is more static
    (a `?` that the operands now determine). Function result types are updated
    to match what the function returns. Run it after binding symbolic
    dimensions to sizes, so every intermediate gets a static shape.

    Example: with `%x : tensor<2x8x64xf32>`, an op declared as
    `kiln.gelu %x : tensor<?x?x64xf32>` is not valid (its type must match), but
    `kiln.matmul %x, %w : ... -> tensor<?x?x128xf32>` becomes
    `tensor<2x8x128xf32>`.
  }];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def Autodiff : Pass<"kiln-autodiff", "mlir::ModuleOp"> {
  let summary = "Derive the gradients of a scalar loss by reverse-mode autodiff";
  let description = [{
    For the function named by `function` (default `loss`), whose first result
    is a rank-0 f32 loss, adds `<function>_grad`: the same arguments, and as
    results the loss followed by the gradient of every trainable model
    parameter, in the module's parameter order (zeros for parameters the
    loss does not use). Frozen parameters have no result, and gradients
    flow only into values that depend on a trainable parameter, so a frozen
    weight's gradient product is never built. The pass walks the function backwards and asks each op for its
    vector-Jacobian product through DifferentiableOpInterface, summing the
    gradients of values used more than once. An op without a rule is an
    error that names it and its location.

    With `recompute`, activations inside each block instance (the ops
    inlined from one `block` of the model, e.g. `h.3`) are not kept for the
    backward pass: the block's forward ops are cloned (marked
    `kiln.recomputed`) just before its backward ops, which read the clones.
    Only the values that cross block boundaries stay alive, so the memory
    plan's peak shrinks from every layer's activations to one layer's plus
    the boundaries, for one extra forward pass.

    Example: `kiln-opt --kiln-autodiff=function=loss` turns
    `func @loss(%x, %y) -> tensor<f32>` into that function plus
    `func @loss_grad(%x, %y) -> (tensor<f32>, tensor<8x4xf32>, ...)`.
  }];
  let options = [
    Option<"function", "function", "std::string", /*default=*/"\"loss\"",
           "The function to differentiate">,
    Option<"recompute", "recompute", "bool", /*default=*/"false",
           "Recompute each block's activations in the backward pass instead "
           "of keeping them">
  ];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def TrainStep : Pass<"kiln-train-step", "mlir::ModuleOp"> {
  let summary = "Build a compiled training step from a gradient function";
  let description = [{
    From `<function>_grad` (made by `kiln-autodiff`), adds `train_step`: the
    same inputs plus `lr` and `step` (rank-0 f32, so a learning-rate
    schedule needs no recompilation), the forward and backward passes, the
    global gradient norm (`kiln.global_norm`) and one in-place
    `kiln.optimizer_update` per parameter (AdamW or SGD with momentum, with
    global-norm clipping at `max-norm`; weight decay only on parameters of
    rank >= 2). It returns the loss and the gradient norm before clipping.

    Example: `kiln-opt --kiln-autodiff --kiln-train-step="optimizer=adamw
    weight-decay=0.1"` on a module with `@loss` adds `@loss_grad` and
    `@train_step(%tokens, %targets, %lr, %step) -> (loss, norm)`.
  }];
  let options = [
    Option<"function", "function", "std::string", /*default=*/"\"loss\"",
           "The loss function (its gradient function must exist)">,
    Option<"optimizer", "optimizer", "std::string", /*default=*/"\"adamw\"",
           "adamw or sgd">,
    Option<"beta1", "beta1", "double", /*default=*/"0.9", "AdamW beta1">,
    Option<"beta2", "beta2", "double", /*default=*/"0.999", "AdamW beta2">,
    Option<"eps", "eps", "double", /*default=*/"1e-8", "AdamW epsilon">,
    Option<"weightDecay", "weight-decay", "double", /*default=*/"0.0",
           "Weight decay for parameters of rank >= 2">,
    Option<"momentum", "momentum", "double", /*default=*/"0.9",
           "SGD momentum">,
    Option<"maxNorm", "max-norm", "double", /*default=*/"1.0",
           "Global-norm clipping threshold; 0 turns clipping off">
  ];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def Lora : Pass<"kiln-lora", "mlir::ModuleOp"> {
  let summary = "Add LoRA adapters to linear layers and freeze the rest";
  let description = [{
    Low-rank adaptation (Hu et al. 2021), as PEFT builds it: each selected
    weight `X.weight` (`[out, in]`, read as a linear layer reads it, `x Xᵀ`)
    gets two trainable parameters, `X.lora_A.weight` `[rank, in]`
    (Kaiming-uniform: uniform in ±1/sqrt(in)) and `X.lora_B.weight`
    `[out, rank]` (zeros), and every product `x Xᵀ` becomes
    `x Xᵀ + (alpha / rank) · (x Aᵀ) Bᵀ`. Every other parameter is frozen,
    so only the adapters train (and get gradients and optimizer state); the
    base may be quantized (run `kiln-quantize-weights` first). The module
    gets `kiln.lora = {rank, alpha, targets}`, which the artifact records.

    `targets` selects weights by glob over parameter paths (`*.c_attn.weight`);
    by default every f32 matrix whose every use is a linear layer's product
    (not embeddings or a tied output projection). A weight a glob names
    exactly that is read otherwise is an error naming the use.

    Example: `kiln-opt --kiln-lora="rank=8 alpha=16 targets=*.c_attn.weight"`.
  }];
  let options = [
    Option<"rank", "rank", "int64_t", /*default=*/"8", "The adapters' rank">,
    Option<"alpha", "alpha", "double", /*default=*/"8.0",
           "The adapters' scale is alpha / rank">,
    ListOption<"targets", "targets", "std::string",
               "Globs over parameter paths (default: every linear weight)">
  ];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def QuantizeWeights : Pass<"kiln-quantize-weights", "mlir::ModuleOp"> {
  let summary = "Store selected weights quantized (int8, int4, NF4)";
  let description = [{
    Marks parameters to be stored quantized: sets `quant` (the spec in
    canonical form, runtime/quant/QuantSpec.h) and `frozen` on each selected
    `kiln.parameter`. The artifact writer quantizes their values from the
    initializer or the imported weights; the runtime's matmul kernels read
    the codes directly.

    `format` is the spec as on the command line: `int8`, `int4:group=128`,
    `nf4` (`nf4:block=64,double=true`). `params` selects parameters by glob
    over their paths (`h.*.mlp.*`, `*.c_attn.weight`); by default every
    matrix whose every use is the right-hand side of a matmul — the weights
    of linear layers, not embeddings, norms, biases or an output projection
    tied to the embedding (which the embedding also reads). A selection may
    also name embedding tables (tied or not): their rows are dequantized as
    they are gathered. A wildcard pattern picks the f32 matrices it matches
    that can be quantized and skips the rest (`*.weight` passes over norms'
    weights); a parameter named exactly must be quantizable, or it is an
    error naming its other use; a selection that picks nothing is an error.

    Run it before `kiln-autodiff`: quantized weights are frozen, and the
    gradient of a matmul's input reads them through the same kernels.

    Example: `kiln-opt --kiln-quantize-weights="format=nf4"` turns
    `kiln.parameter @h.0.mlp.c_fc.weight : tensor<3072x768xf32> {...}` into
    `{..., frozen, quant = "nf4:block=64,double=true"}`.
  }];
  let options = [
    Option<"format", "format", "std::string", /*default=*/"\"nf4\"",
           "The quantization: int8, int4[:group=G], nf4[:block=B,double=BOOL]">,
    ListOption<"params", "params", "std::string",
               "Globs over parameter paths (default: every matmul weight)">
  ];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def SparsifyAttention : Pass<"kiln-sparsify-attention", "mlir::ModuleOp"> {
  let summary = "Give attention ops a sparse pattern without editing the model";
  let description = [{
    Sets the pattern of every `kiln.attention` (and `kiln.attention_grad`)
    op in the selected functions and blocks to `pattern`, written as on the
    command line (`sliding_window:512`, `block_sparse:block=64,local=1,
    global=1,random=3,seed=0`, `strided:128`, `fixed:128,8`, `dense`; see
    ir/AttentionPattern.h). A pattern written in the model is replaced;
    `dense` removes it. The op's `causal` flag and key mask are kept and
    combine with the pattern. Run it before `kiln-autodiff`, which copies
    the forward op's pattern into its gradient.

    `functions` restricts it to the named functions, `blocks` to ops inlined
    from the named block instances (`h` for every layer of block `h`,
    `h.3`, `h.0-5`). Selecting no attention op is an error, as is an unknown
    function name.

    Example: `kiln-opt --kiln-sparsify-attention="pattern=sliding_window:512
    blocks=h.0-5"` turns the first six layers' `kiln.attention ... {causal =
    true, ...}` into `{causal = true, pattern = #kiln.pattern<sliding_window,
    window = 512>, ...}`.
  }];
  let options = [
    Option<"pattern", "pattern", "std::string", /*default=*/"\"\"",
           "The pattern, as on the command line (sliding_window:512)">,
    ListOption<"functions", "functions", "std::string",
               "Only these functions (default: all)">,
    ListOption<"blocks", "blocks", "std::string",
               "Only ops in these block instances: h, h.3, h.0-5 "
               "(default: all)">
  ];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def DeriveDecode : Pass<"kiln-derive-decode", "mlir::ModuleOp"> {
  let summary = "Derive incremental (KV-cache) decoding from a decoder's forward";
  let description = [{
    From a causal decoder's `function` (token ids `[B, T]` to outputs such as
    logits `[B, T, V]`), adds `decode`: the same computation for new tokens
    only, reading and extending a key/value cache the caller holds. Its
    inputs are the tokens, `positions[B, T]` (each token's position),
    `lengths[B]` (how many of each row's tokens are real; a batch of
    prompts of different lengths is right-padded) and, per self-attention
    in order, `cache.<i>.key[B, S, Hkv*D]` and `cache.<i>.value[B, S,
    Hkv*Dv]` (`S`, a new symbolic dimension, is the cache's length). One
    function serves both prefill (the prompt, `T` tokens at positions 0..)
    and each decoding step (`T` = 1).

    Positions reach the computation in three ways, each rewritten:
    - a causal `kiln.attention` whose query, key and value all come from
      the tokens becomes `kiln.cached_attention` (its `sliding_window(w)`
      pattern a rolling cache of `w` slots);
    - `kiln.rope` without positions gets the positions;
    - a position table sliced to the sequence (`wpe.weight[0:T]`) becomes a
      lookup at the positions.
    Everything else that sees the tokens must treat each position on its
    own (elementwise ops, matmuls by weights, norms and splits over the
    features, attention to keys that do not come from the tokens). An op
    that mixes positions in another way (a reduction over T, a bias or mask
    on self-attention, a non-causal or block-sparse self-attention) cannot
    be decoded incrementally: with `required` that is an error naming the op
    and its place in the source, without it no `decode` is added (kiln
    compile's default: every causal decoder gets one).

    A causal self-attention whose bias is T5's relative position bias of
    the tokens (`transpose(embedding(table, relative_position_bucket(x,
    x)), [2, 0, 1])`) becomes a cached attention that buckets the cached
    positions itself.

    An encoder-decoder's `function` has more inputs: the decoded one is the
    token ids that reach a causal attention's query and share the result's
    sequence dimension (T5's `decoder_input_ids`). The other inputs stay
    inputs of `decode`; what the decoder reads from them that does not
    depend on the tokens (the encoder's output through each
    cross-attention's key and value projections) is computed once by a
    second derived function, `prepare(<those inputs>) -> memory.0, ...`,
    whose results `decode` takes as inputs `memory.<i>[B, S, features]`.

    Example: `kiln-opt --kiln-derive-decode` on GPT-2 adds
    `@decode(%tokens, %positions, %lengths, %cache.0.key, ...) -> logits`.
  }];
  let options = [
    Option<"function", "function", "std::string", /*default=*/"\"forward\"",
           "The decoder function to derive from">,
    Option<"required", "required", "bool", /*default=*/"false",
           "Fail when the function cannot be decoded incrementally">
  ];
  let dependentDialects = ["::kiln::KilnDialect"];
}

//===----------------------------------------------------------------------===//
// Fusion (the CPU pipeline runs them before lowering; kiln compile
// --no-fuse turns them off)
//===----------------------------------------------------------------------===//

def FuseMatmulEpilogue : Pass<"kiln-fuse-matmul-epilogue", "mlir::func::FuncOp"> {
  let summary = "Fold bias, scaling, activation and residual add into matmul";
  let description = [{
    Rewrites `kiln.matmul` followed by, in this order and each optional, an
    add of a `[N]` bias, a multiplication by a scalar constant, `relu`/
    `gelu`/`silu`, and an add of a tensor of the result's shape into one
    `kiln.fused_matmul`, which the CPU backend runs as a oneDNN matmul with
    post-ops. A step is absorbed only when the previous value has no other
    use, so training graphs keep the pre-activation the backward pass reads
    (there the bias and the residual still fuse).

    Example:
    ```mlir
    %y = kiln.matmul %x, %w {transpose_b = true} : ...
    %z = kiln.add %y, %b : ...
    %a = kiln.gelu %z {approximate = #kiln<gelu tanh>} : ...
    ```
    becomes `%a = kiln.fused_matmul %x, %w bias %b {activation = #kiln<activation gelu_tanh>,
    transpose_b = true}`.
  }];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def FuseMatmulReduce : Pass<"kiln-fuse-matmul-reduce", "mlir::func::FuncOp"> {
  let summary = "Turn a batch of weight-gradient products and their sum into one product";
  let description = [{
    The gradient of a linear layer's weight comes out of autodiff as a batched
    `kiln.matmul {transpose_a}` (`[B, T, N]^T x [B, T, K] -> [B, N, K]`)
    followed by `kiln.reduce_sum` over the batch. This pass rewrites the pair
    into `kiln.fused_matmul {reduce_batch}`: one product over the `B*T`
    flattened rows, with no `[B, N, K]` intermediate and a contraction `B`
    times longer (much closer to the machine's GEMM peak).

    Example:
    ```mlir
    %p = kiln.matmul %g, %x {transpose_a = true} : (tensor<?x?x3072xf32>, tensor<?x?x768xf32>) -> tensor<?x3072x768xf32>
    %s = kiln.reduce_sum %p {axes = array<i64: 0>} : tensor<?x3072x768xf32> -> tensor<3072x768xf32>
    ```
    becomes `%s = kiln.fused_matmul %g, %x {reduce_batch = true,
    transpose_a = true}`.
  }];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def FuseAddNorm : Pass<"kiln-fuse-add-norm", "mlir::func::FuncOp"> {
  let summary = "Fuse a residual add with the layernorm or rmsnorm that reads it";
  let description = [{
    Rewrites `%s = kiln.add %x, %r` followed by `kiln.layernorm %s` (or
    `kiln.rmsnorm`) into `kiln.add_norm`, which returns both the sum (the
    residual stream, for the add's other users) and the normalized rows from
    one pass over memory. Both add operands must have the result's type (no
    broadcasting).

    Example: `%s = kiln.add %x, %r` and `%y = kiln.layernorm %s, %g, %b`
    become `%s, %y = kiln.add_norm %x, %r, %g bias %b {kind = #kiln<norm layernorm>}`.
  }];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def FuseCrossEntropy : Pass<"kiln-fuse-cross-entropy", "mlir::func::FuncOp"> {
  let summary = "Compute cross-entropy and its gradient in one kernel";
  let description = [{
    When a function computes both `kiln.cross_entropy` and
    `kiln.cross_entropy_grad` of the same logits and targets (every gradient
    function does), replaces them with one `kiln.softmax_cross_entropy`
    that reads the logits once for both; the class probabilities are never
    stored.

    Example: `%l = kiln.cross_entropy %x, %t` and `%d =
    kiln.cross_entropy_grad %x, %t, %one` become `%l, %d =
    kiln.softmax_cross_entropy %x, %t, %one`.
  }];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def FuseElementwise : Pass<"kiln-fuse-elementwise", "mlir::func::FuncOp"> {
  let summary = "Fuse chains of elementwise ops into one pass over memory";
  let description = [{
    Groups f32 elementwise ops (binary arithmetic, unary math and
    activations, `activation_grad`) into `kiln.fused_elementwise`: starting
    from the last op of a chain, it absorbs every producer that is itself
    elementwise and used only inside the group; scalar constants move into
    the body. A group of one op is left alone (oneDNN runs it). The result
    reads each outside input once and writes once, with no intermediates.

    Example: `%s = kiln.silu %g` and `%y = kiln.mul %s, %u` (Llama's gated
    MLP) become one `kiln.fused_elementwise %g, %u` whose body is the two
    ops on scalars.
  }];
  let dependentDialects = ["::kiln::KilnDialect"];
}

#endif // KILN_PASSES
