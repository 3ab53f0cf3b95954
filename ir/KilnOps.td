//===- KilnOps.td - the kiln dialect -----------------------*- tablegen -*-===//
//
// The kiln dialect: tensor-level operations for transformer models. Every op
// verifies its operands and infers its result type (InferTypeOpInterface);
// symbolic dimensions (batch, sequence) are dynamic (`?`) in the IR, and the
// few attributes that must name them (reshape targets, slice bounds) spell them
// as dimension expressions such as "B", "T" or "B*T".
//
//===----------------------------------------------------------------------===//

#ifndef KILN_OPS
#define KILN_OPS

include "mlir/IR/OpBase.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/IR/BuiltinAttributeInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "ir/KilnInterfaces.td"
include "ir/KilnEnums.td"

def Kiln_Dialect : Dialect {
  let name = "kiln";
  let cppNamespace = "::kiln";
  let summary = "Tensor operations for transformer models.";
  let description = [{
    The `kiln` dialect is what the kiln frontend produces from a `.kiln` model
    file and what kiln's passes transform. Operations work on ranked builtin
    tensors. Dimensions that are only known at run time (batch `B`, sequence
    `T`) are dynamic (`?`); functions record their names in the
    `kiln.dims` argument attribute, and reshape/slice attributes spell them as
    dimension expressions (`"B"`, `"B*T"`, `"4*T"`).

    Model parameters are module-level `kiln.parameter` symbols and are read
    inside functions with `kiln.param`. Module attributes record the model name
    (`kiln.model`), its bound hyperparameters (`kiln.hparams`) and its symbolic
    dimensions (`kiln.dims`).

    High-level operations (`kiln.attention`, `kiln.layernorm`, `kiln.rope`,
    `kiln.cross_entropy`) stay whole so that fusion, sparse attention and
    autodiff see them as units.
  }];
  let useDefaultAttributePrinterParser = 1;
}

// The kinds (ir/KilnEnums.td) as attributes: `#kiln<activation gelu_tanh>`.
def Kiln_ActivationAttr : EnumAttr<Kiln_Dialect, Kiln_Activation, "activation">;
def Kiln_GeluApproximationAttr
    : EnumAttr<Kiln_Dialect, Kiln_GeluApproximation, "gelu">;
def Kiln_RopeStyleAttr : EnumAttr<Kiln_Dialect, Kiln_RopeStyle, "rope">;
def Kiln_ReduceKindAttr : EnumAttr<Kiln_Dialect, Kiln_ReduceKind, "reduce">;
def Kiln_NormKindAttr : EnumAttr<Kiln_Dialect, Kiln_NormKind, "norm">;
def Kiln_OptimizerKindAttr
    : EnumAttr<Kiln_Dialect, Kiln_OptimizerKind, "optimizer">;

// Which (query, key) pairs `kiln.attention` computes: one of the patterns of
// runtime/attention/PatternSpec.h (the table the language, the command line,
// this attribute, the artifact and the kernels share). Causality stays the
// op's own `causal` flag and combines with every pattern.
def Kiln_AttentionPatternAttr : AttrDef<Kiln_Dialect, "AttentionPattern"> {
  let mnemonic = "pattern";
  let summary = "a sparse attention pattern";
  let description = [{
    The kind and its parameters, named as in the language:
    `#kiln.pattern<sliding_window, window = 256>`,
    `#kiln.pattern<block_sparse, block = 64, local = 1, global = 1,
    random = 3, seed = 0>`, `#kiln.pattern<strided, stride = 128>`,
    `#kiln.pattern<fixed, stride = 128, summary = 8>`; every kind takes
    `global_tokens = g`. Verified with the runtime's own check (bounds, a
    power-of-two block, a seed with random blocks).
  }];
  let parameters = (ins "::kiln::runtime::attention::PatternSpec":$spec);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
}

//===----------------------------------------------------------------------===//
// Types and attribute constraints
//===----------------------------------------------------------------------===//

def Kiln_FloatElement : AnyTypeOf<[F16, BF16, F32, F64]>;
def Kiln_IntElement : AnyTypeOf<[I32, I64]>;
def Kiln_Tensor : RankedTensorOf<[F16, BF16, F32, F64, I1, I32, I64]>;
def Kiln_FloatTensor : RankedTensorOf<[F16, BF16, F32, F64]>;
def Kiln_IntTensor : RankedTensorOf<[I32, I64]>;
def Kiln_MaskTensor : RankedTensorOf<[I1, I32, I64, F16, BF16, F32, F64]>;
def Kiln_ScalarF32 : 0DTensorOf<[F32]>;

// A dimension: a static size, or an expression over symbolic dimensions.
def Kiln_DimExprAttr : AnyAttrOf<[I64Attr, StrAttr]>;

//===----------------------------------------------------------------------===//
// Base classes
//===----------------------------------------------------------------------===//

class Kiln_Op<string mnemonic, list<Trait> traits = []>
    : Op<Kiln_Dialect, mnemonic, traits>;

// Ops whose result type follows from operands and attributes. The inferred
// type may be less static than the declared one (a `?` where the frontend
// knows a size); `isCompatibleReturnTypes` accepts that.
class Kiln_InferOp<string mnemonic, list<Trait> traits = []>
    : Kiln_Op<mnemonic, !listconcat(traits,
          [Pure, InferTypeOpAdaptorWithIsCompatible])>;

// Ops whose result has exactly the type of their (first) input; ODS derives
// the inference from the type constraint.
class Kiln_SameTypeOp<string mnemonic, list<Trait> traits = []>
    : Kiln_Op<mnemonic, !listconcat(traits, [Pure, InferTypeOpInterface])>;

class Kiln_BinaryOp<string mnemonic, string what, list<Trait> traits = []>
    : Kiln_InferOp<mnemonic, traits> {
  let summary = "elementwise " # what # " with broadcasting";
  let description = [{
    Elementwise }] # what # [{ of two tensors with NumPy broadcasting: shapes
    are aligned at the trailing dimension, and each pair of sizes must be equal
    or one of them 1. Both operands have the same element type.

    Example:
    ```mlir
    %r = kiln.}] # mnemonic # [{ %a, %b : tensor<?x?x768xf32>, tensor<768xf32> -> tensor<?x?x768xf32>
    ```
  }];
  let arguments = (ins Kiln_Tensor:$lhs, Kiln_Tensor:$rhs);
  let results = (outs Kiln_Tensor:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs attr-dict `:` type($lhs) `,` type($rhs) `->` type($result)
  }];
}

class Kiln_UnaryFloatOp<string mnemonic, string what, string formula,
                        list<Trait> traits = []>
    : Kiln_SameTypeOp<mnemonic, !listconcat(traits,
                                            [SameOperandsAndResultType])> {
  let summary = what;
  let description = [{
    Applies }] # what # [{ elementwise: `}] # formula # [{`.

    Example:
    ```mlir
    %y = kiln.}] # mnemonic # [{ %x : tensor<?x?x3072xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$input);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($result)";
}

class Kiln_ReduceOp<string mnemonic, string what>
    : Kiln_InferOp<mnemonic, [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]> {
  let summary = what # " over axes";
  let description = [{
    Reduces `input` with }] # what # [{ over the listed `axes` (negative
    values count from the end; each axis at most once). With `keepdim` the
    reduced dimensions stay as size 1.

    Example:
    ```mlir
    %s = kiln.}] # mnemonic # [{ %x {axes = array<i64: -1>, keepdim = true} : tensor<?x?x768xf32> -> tensor<?x?x1xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$input, DenseI64ArrayAttr:$axes,
                   DefaultValuedAttr<BoolAttr, "false">:$keepdim);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
}

//===----------------------------------------------------------------------===//
// Parameters and constants
//===----------------------------------------------------------------------===//

def Kiln_ParameterOp : Kiln_Op<"parameter", [Symbol, HasParent<"::mlir::ModuleOp">]> {
  let summary = "declares a model parameter";
  let description = [{
    Declares a named, statically shaped model parameter and how to initialize
    it. Names are paths that mirror the model's block structure
    (`h.3.attn.c_attn.weight`), so checkpoints map by name.

    Initializers (`init`, with `init_args`):
    - `zeros`, `ones`: no arguments;
    - `normal`: one argument, the standard deviation (> 0), mean 0;
    - `uniform`: two arguments, the bounds `low < high`;
    - `constant`: one argument, the value.

    A `frozen` parameter is not trained: `kiln-train-step` gives it no
    optimizer update, and the artifact marks it not trainable, so a
    `Trainer` keeps no optimizer state for it (the base weights of a LoRA
    fine-tune, say).

    `quant` stores the parameter quantized (runtime/quant/QuantSpec.h:
    `int8`, `int4:group=G`, `nf4:block=B,double=BOOL`): the artifact holds
    its codes and scales instead of f32 values, quantized from the
    initializer or the imported weights when the artifact is written. Its
    type stays the f32 tensor it stands for. A quantized parameter is
    frozen and f32; int8 and int4 quantize matrices (`[out, in]` rows).
    `kiln-quantize-weights` sets it.

    Example:
    ```mlir
    kiln.parameter @wte : tensor<50257x768xf32> {init = "normal", init_args = array<f64: 0.02>}
    kiln.parameter @base : tensor<64x64xf32> {init = "zeros", frozen}
    kiln.parameter @fc : tensor<3072x768xf32> {init = "normal", init_args = array<f64: 0.02>, frozen, quant = "nf4:block=64,double=true"}
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name,
                   TypeAttrOf<Kiln_Tensor>:$type,
                   StrAttr:$init,
                   DefaultValuedAttr<DenseF64ArrayAttr, "{}">:$init_args,
                   UnitAttr:$frozen,
                   OptionalAttr<StrAttr>:$quant);
  let assemblyFormat = "$sym_name `:` $type attr-dict";
  let hasVerifier = 1;
}

def Kiln_ParamOp : Kiln_Op<"param",
    [Pure, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "reads a model parameter";
  let description = [{
    Produces the value of the `kiln.parameter` named by `name`. The result
    type must equal the parameter's declared type.

    Example:
    ```mlir
    %w = kiln.param @wte : tensor<50257x768xf32>
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$name);
  let results = (outs Kiln_Tensor:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
}

def Kiln_ConstantOp : Kiln_Op<"constant", [ConstantLike, Pure,
    AllTypesMatch<["value", "result"]>]> {
  let summary = "a constant tensor";
  let description = [{
    A tensor constant. Scalars used in arithmetic are rank-0 constants that
    broadcast.

    Example:
    ```mlir
    %half = kiln.constant dense<5.000000e-01> : tensor<f32>
    ```
  }];
  let arguments = (ins ElementsAttr:$value);
  let results = (outs Kiln_Tensor:$result);
  let assemblyFormat = "attr-dict $value";
  let hasFolder = 1;
}

//===----------------------------------------------------------------------===//
// Lookup and linear algebra
//===----------------------------------------------------------------------===//

def Kiln_EmbeddingOp : Kiln_InferOp<"embedding", [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]> {
  let summary = "embedding lookup (gather rows)";
  let description = [{
    Gathers rows of a `[V, D]` table at integer indices of any shape; the
    result has the indices' shape followed by `D`. Indices outside `[0, V)`
    are a run-time error.

    Example:
    ```mlir
    %x = kiln.embedding %wte, %tokens : tensor<50257x768xf32>, tensor<?x?xi32> -> tensor<?x?x768xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$table, Kiln_IntTensor:$indices);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = [{
    $table `,` $indices attr-dict `:` type($table) `,` type($indices) `->` type($result)
  }];
}

def Kiln_MatmulOp : Kiln_InferOp<"matmul", [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]> {
  let summary = "batched matrix multiplication";
  let description = [{
    `lhs[..., M, K] x rhs[..., K, N] -> [..., M, N]`, with the leading (batch)
    dimensions broadcast NumPy-style; a rank-2 operand is shared by every batch.
    `transpose_a` / `transpose_b` swap the last two dimensions of an operand
    before multiplying (a `[out, in]` linear weight uses `transpose_b`).

    Example:
    ```mlir
    %y = kiln.matmul %x, %w {transpose_b = true} : tensor<?x?x768xf32>, tensor<2304x768xf32> -> tensor<?x?x2304xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$lhs, Kiln_FloatTensor:$rhs,
                   DefaultValuedAttr<BoolAttr, "false">:$transpose_a,
                   DefaultValuedAttr<BoolAttr, "false">:$transpose_b);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs attr-dict `:` type($lhs) `,` type($rhs) `->` type($result)
  }];
  // A kiln.transpose of an operand's last two dimensions folds into the
  // transpose flags, so `x @ transpose(wte)` never copies the table.
  let hasCanonicalizer = 1;
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

def Kiln_AddOp : Kiln_BinaryOp<"add", "addition", [Commutative, DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]>;
def Kiln_SubOp : Kiln_BinaryOp<"sub", "subtraction", [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]>;
def Kiln_MulOp : Kiln_BinaryOp<"mul", "multiplication", [Commutative, DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]>;
def Kiln_DivOp : Kiln_BinaryOp<"div", "division", [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]>;
def Kiln_MaxOp : Kiln_BinaryOp<"max", "maximum", [Commutative]>;
def Kiln_MinOp : Kiln_BinaryOp<"min", "minimum", [Commutative]>;
def Kiln_PowOp : Kiln_BinaryOp<"pow", "power (lhs raised to rhs)", [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]>;

def Kiln_NegOp : Kiln_UnaryFloatOp<"neg", "negation", "y = -x",
                                   [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]>;
def Kiln_ExpOp : Kiln_UnaryFloatOp<"exp", "the exponential", "y = exp(x)",
                                   [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]>;
def Kiln_LogOp : Kiln_UnaryFloatOp<"log", "the natural logarithm",
                                   "y = log(x)", [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]>;
def Kiln_SqrtOp : Kiln_UnaryFloatOp<"sqrt", "the square root", "y = sqrt(x)",
                                    [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]>;
def Kiln_RsqrtOp : Kiln_UnaryFloatOp<"rsqrt", "the reciprocal square root",
                                     "y = 1 / sqrt(x)", [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]>;
def Kiln_TanhOp : Kiln_UnaryFloatOp<"tanh", "the hyperbolic tangent",
                                    "y = tanh(x)", [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]>;
def Kiln_SigmoidOp : Kiln_UnaryFloatOp<"sigmoid", "the logistic sigmoid",
                                       "y = 1 / (1 + exp(-x))", [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]>;
def Kiln_ReluOp : Kiln_UnaryFloatOp<"relu", "the rectifier", "y = max(x, 0)",
                                  [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]>;
def Kiln_SiluOp : Kiln_UnaryFloatOp<"silu", "SiLU (swish)", "y = x * sigmoid(x)",
                                    [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]>;

def Kiln_GeluOp : Kiln_SameTypeOp<"gelu", [SameOperandsAndResultType,
                                          DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]> {
  let summary = "GELU activation, exact (erf) or tanh-approximated";
  let description = [{
    `approximate = #kiln<gelu none>`: `y = x/2 * (1 + erf(x / sqrt(2)))` (BERT).
    `approximate = #kiln<gelu tanh>`: `y = x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`
    (GPT-2's `gelu_new`).

    Example:
    ```mlir
    %y = kiln.gelu %x {approximate = #kiln<gelu tanh>} : tensor<?x?x3072xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$input,
                   DefaultValuedAttr<Kiln_GeluApproximationAttr, "::kiln::GeluApproximation::None">:$approximate);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($result)";
}

def Kiln_CastOp : Kiln_Op<"cast", [Pure, DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]> {
  let summary = "element type conversion";
  let description = [{
    Converts every element to the result's element type; the shape is kept.
    Float to integer truncates toward zero; to `i1`, non-zero becomes true.

    Example:
    ```mlir
    %m = kiln.cast %mask : tensor<?x?xi32> -> tensor<?x?xf32>
    ```
  }];
  let arguments = (ins Kiln_Tensor:$input);
  let results = (outs Kiln_Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Shape manipulation
//===----------------------------------------------------------------------===//

def Kiln_ReshapeOp : Kiln_InferOp<"reshape", [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]> {
  let summary = "changes the shape, keeping the elements in row-major order";
  let description = [{
    `shape` gives one entry per result dimension: a positive integer, or a
    dimension expression over the model's symbolic dimensions — a product of
    names and positive integers such as `"B"`, `"B*T"` or `"2*T"`. Symbolic
    entries are dynamic (`?`) in the result type. When every size is static the
    element counts must agree.

    Example:
    ```mlir
    %h = kiln.reshape %x {shape = ["B", "T", 12, 64]} : tensor<?x?x768xf32> -> tensor<?x?x12x64xf32>
    ```
  }];
  let arguments = (ins Kiln_Tensor:$input, ArrayAttr:$shape);
  let results = (outs Kiln_Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
}

def Kiln_TransposeOp : Kiln_InferOp<"transpose", [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]> {
  let summary = "permutes dimensions";
  let description = [{
    Result dimension `i` is input dimension `perm[i]`; `perm` is a permutation
    of `0 .. rank-1`.

    Example:
    ```mlir
    %t = kiln.transpose %x {perm = array<i64: 0, 2, 1, 3>} : tensor<?x?x12x64xf32> -> tensor<?x12x?x64xf32>
    ```
  }];
  let arguments = (ins Kiln_Tensor:$input, DenseI64ArrayAttr:$perm);
  let results = (outs Kiln_Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
}

def Kiln_SliceOp : Kiln_InferOp<"slice", [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]> {
  let summary = "a contiguous range along one axis";
  let description = [{
    Takes indices `[start, end)` along `axis` (negative axes count from the
    end). `end` is an integer or a dimension expression (`"T"`) bound at run
    time; a symbolic end makes that result dimension dynamic.

    Example:
    ```mlir
    %p = kiln.slice %wpe {axis = 0 : i64, start = 0 : i64, end = "T"} : tensor<1024x768xf32> -> tensor<?x768xf32>
    ```
  }];
  let arguments = (ins Kiln_Tensor:$input, I64Attr:$axis, I64Attr:$start,
                   Kiln_DimExprAttr:$end);
  let results = (outs Kiln_Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
}

def Kiln_ConcatOp : Kiln_InferOp<"concat", [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]> {
  let summary = "joins tensors along an axis";
  let description = [{
    All inputs have the same rank and element type and agree on every
    dimension except `axis`.

    Example:
    ```mlir
    %c = kiln.concat %a, %b {axis = -1 : i64} : (tensor<?x32xf32>, tensor<?x32xf32>) -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins Variadic<Kiln_Tensor>:$inputs, I64Attr:$axis);
  let results = (outs Kiln_Tensor:$result);
  let assemblyFormat = "$inputs attr-dict `:` functional-type($inputs, results)";
}

def Kiln_SplitOp : Kiln_Op<"split", [Pure, DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]> {
  let summary = "splits a tensor into equal parts along an axis";
  let description = [{
    Produces as many results as the op has, of equal size along `axis`; that
    dimension must be divisible by the number of results.

    Example:
    ```mlir
    %q, %k, %v = kiln.split %qkv {axis = -1 : i64} : tensor<?x?x2304xf32> -> tensor<?x?x768xf32>, tensor<?x?x768xf32>, tensor<?x?x768xf32>
    ```
  }];
  let arguments = (ins Kiln_Tensor:$input, I64Attr:$axis);
  let results = (outs Variadic<Kiln_Tensor>:$results);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($results)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Reductions and normalization
//===----------------------------------------------------------------------===//

def Kiln_ReduceSumOp : Kiln_ReduceOp<"reduce_sum", "the sum">;
def Kiln_ReduceMeanOp : Kiln_ReduceOp<"reduce_mean", "the mean">;
def Kiln_ReduceMaxOp : Kiln_ReduceOp<"reduce_max", "the maximum">;

def Kiln_LayerNormOp : Kiln_InferOp<"layernorm", [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]> {
  let summary = "layer normalization over the last dimension";
  let description = [{
    `y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias`, with the mean and
    the biased variance taken over the last dimension `C`; `weight` and `bias`
    are `[C]`.

    Example:
    ```mlir
    %y = kiln.layernorm %x, %g, %b {eps = 1.0e-05 : f64} : tensor<?x?x768xf32>, tensor<768xf32>, tensor<768xf32> -> tensor<?x?x768xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$input, Kiln_FloatTensor:$weight,
                   Kiln_FloatTensor:$bias, F64Attr:$eps);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight `,` $bias attr-dict `:` type($input) `,` type($weight) `,` type($bias) `->` type($result)
  }];
}

def Kiln_RMSNormOp : Kiln_InferOp<"rmsnorm", [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]> {
  let summary = "root-mean-square normalization over the last dimension";
  let description = [{
    `y = x / sqrt(mean(x^2) + eps) * weight` over the last dimension `C`;
    `weight` is `[C]` (Llama's RMSNorm, T5's layer norm).

    Example:
    ```mlir
    %y = kiln.rmsnorm %x, %w {eps = 1.0e-05 : f64} : tensor<?x?x64xf32>, tensor<64xf32> -> tensor<?x?x64xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$input, Kiln_FloatTensor:$weight,
                   F64Attr:$eps);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight attr-dict `:` type($input) `,` type($weight) `->` type($result)
  }];
}

def Kiln_SoftmaxOp : Kiln_SameTypeOp<"softmax", [SameOperandsAndResultType, DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]> {
  let summary = "softmax along an axis";
  let description = [{
    `y = exp(x - max(x)) / sum(exp(x - max(x)))` along `axis` (negative counts
    from the end).

    Example:
    ```mlir
    %p = kiln.softmax %s {axis = -1 : i64} : tensor<?x12x?x?xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$input, I64Attr:$axis);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Kiln_DropoutOp : Kiln_SameTypeOp<"dropout", [SameOperandsAndResultType, DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]> {
  let summary = "seeded dropout; the identity at inference";
  let description = [{
    In training, zeroes each element with probability `rate` and scales the
    survivors by `1 / (1 - rate)`. The mask is a deterministic function of the
    run's seed, the step and this op's `seed` (unique per op), so training is
    reproducible. At inference it is the identity.

    Example:
    ```mlir
    %y = kiln.dropout %x {rate = 1.000000e-01 : f64, seed = 3 : i64} : tensor<?x?x768xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$input, F64Attr:$rate, I64Attr:$seed);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($result)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Transformer building blocks
//===----------------------------------------------------------------------===//

def Kiln_RopeOp : Kiln_InferOp<"rope", [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]> {
  let summary = "rotary position embedding";
  let description = [{
    Rotates `input[B, T, H*head_dim]` per head by position-dependent angles
    `pos * theta^(-2i/head_dim)`, `i < head_dim/2`. Positions are
    `0 .. T-1`, or the optional integer `positions` (`[T]` or `[B, T]`) for
    decoding with a cache.

    `style = #kiln<rope interleaved>` rotates pairs `(x[2i], x[2i+1])` (llama2.c, Meta's
    Llama); `style = #kiln<rope half>` rotates `(x[i], x[i + head_dim/2])` (Hugging Face
    Llama, GPT-NeoX). `inverse` rotates by the negated angles; it is the
    rotation's transpose, so it carries gradients back through a rope.

    Example:
    ```mlir
    %q2 = kiln.rope %q {head_dim = 8 : i64, theta = 1.000000e+04 : f64, style = #kiln<rope interleaved>} : tensor<?x?x64xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$input,
                   Optional<Kiln_IntTensor>:$positions,
                   I64Attr:$head_dim, F64Attr:$theta,
                   DefaultValuedAttr<Kiln_RopeStyleAttr, "::kiln::RopeStyle::Interleaved">:$style,
                   DefaultValuedAttr<BoolAttr, "false">:$inverse);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = [{
    $input (`positions` $positions^ `:` type($positions))? attr-dict `:` type($input)
  }];
  let hasVerifier = 1;
}

def Kiln_AttentionOp : Kiln_InferOp<"attention", [AttrSizedOperandSegments, DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]> {
  let summary = "multi-head scaled dot-product attention";
  let description = [{
    `q[B, Tq, H*D]`, `k[B, Tk, Hkv*D]`, `v[B, Tk, Hkv*Dv]` with `H =
    num_heads`, `Hkv = num_kv_heads` (grouped-query attention when `Hkv < H`:
    query head `h` reads key/value head `h / (H / Hkv)`). Per head:
    `softmax(q k^T * scale + bias + mask) v`; the result is `[B, Tq, H*Dv]`.

    - `causal`: query `i` sees keys `j <= i + (Tk - Tq)` (aligned at the end,
      so decoding with a cache works).
    - `pattern` (optional): a sparse pattern (`#kiln.pattern<...>`) that
      limits which keys each query sees, combined with `causal` and `mask`
      (runtime/attention/PatternSpec.h gives the exact semantics). A query
      that sees no key yields zeros.
    - `mask` (optional): `[B, Tk]` key padding mask; zero means "do not
      attend".
    - `bias` (optional): an additive bias broadcastable to `[B, H, Tq, Tk]`
      (rank 3 `[H, Tq, Tk]` or rank 4): T5's relative position bias, ALiBi.

    With `save_lse` the op also returns `lse[B, H, Tq]`, the log-sum-exp of
    each row of scaled scores (what `kiln-autodiff` saves for
    `kiln.attention_grad`; `-inf` for a row that sees no key).

    It stays one op so that fused and sparse attention kernels see it whole.

    Example:
    ```mlir
    %o = kiln.attention %q, %k, %v {num_heads = 12 : i64, num_kv_heads = 12 : i64, scale = 1.250000e-01 : f64, causal = true}
        : (tensor<?x?x768xf32>, tensor<?x?x768xf32>, tensor<?x?x768xf32>) -> tensor<?x?x768xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$query, Kiln_FloatTensor:$key,
                   Kiln_FloatTensor:$value,
                   Optional<Kiln_MaskTensor>:$mask,
                   Optional<Kiln_FloatTensor>:$bias,
                   I64Attr:$num_heads, I64Attr:$num_kv_heads, F64Attr:$scale,
                   DefaultValuedAttr<BoolAttr, "false">:$causal,
                   OptionalAttr<Kiln_AttentionPatternAttr>:$pattern,
                   UnitAttr:$save_lse);
  let results = (outs Kiln_FloatTensor:$result,
                 Optional<RankedTensorOf<[F32]>>:$lse);
  let assemblyFormat = [{
    $query `,` $key `,` $value (`mask` $mask^)? (`bias` $bias^)? attr-dict
    `:` functional-type(operands, results)
  }];
}

def Kiln_CachedAttentionOp : Kiln_Op<"cached_attention",
    [MemoryEffects<[MemRead, MemWrite]>]> {
  let summary = "causal attention over a key/value cache it appends to";
  let description = [{
    Incremental decoding's attention, which `kiln-derive-decode` makes from
    a causal self-attention. `query[B, T, H*D]`, `key[B, T, Hkv*D]` and
    `value[B, T, Hkv*Dv]` belong to this call's new tokens;
    `key_cache[B, S, Hkv*D]` and `value_cache[B, S, Hkv*Dv]` hold the
    earlier tokens' keys and values, which the op reads and then extends
    with this call's: position `p` lives in slot `p` or, with a `window` of
    at most `S` positions, in slot `p mod S` (a rolling cache).
    `positions[B, T]` gives each new token's position and `lengths[B]` how
    many of row `b`'s tokens are real: row `b`'s real tokens sit at
    consecutive positions `positions[b, 0] + t`, `t < lengths[b]`, and the
    rest of the row is padding, which is neither cached nor attended to
    and whose result rows are zero.

    A query at position `p` sees the keys at positions `max(0, p - window +
    1) .. p` (`0 .. p` without a window): exactly `kiln.attention {causal}`
    (with `sliding_window(window)`) over the whole sequence so far, so a
    sequence decoded in steps gets the logits of the whole recomputation.

    An optional `relative_bias[num_buckets, H]` table adds T5's relative
    position bias: the score of the query at position `p` and the key at
    position `j` gets `relative_bias[bucket(j - p), h]`, with the buckets
    of `kiln.relative_position_bucket` (`relative_buckets`,
    `relative_max_distance`, `relative_bidirectional`). It is what
    `kiln.attention`'s bias `transpose(embedding(table,
    relative_position_bucket(x, x)), [2, 0, 1])` adds, computed for the
    cached positions instead of a `[T, T]` square.

    Example:
    ```mlir
    %o = kiln.cached_attention %q, %k, %v, %kc, %vc, %pos, %len {num_heads = 12 : i64, num_kv_heads = 12 : i64, scale = 1.250000e-01 : f64, window = 0 : i64}
        : (tensor<?x?x768xf32>, tensor<?x?x768xf32>, tensor<?x?x768xf32>, tensor<?x?x768xf32>, tensor<?x?x768xf32>, tensor<?x?xi32>, tensor<?xi32>) -> tensor<?x?x768xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$query, Kiln_FloatTensor:$key,
                   Kiln_FloatTensor:$value, Kiln_FloatTensor:$key_cache,
                   Kiln_FloatTensor:$value_cache, TensorOf<[I32]>:$positions,
                   TensorOf<[I32]>:$lengths,
                   Optional<Kiln_FloatTensor>:$relative_bias,
                   I64Attr:$num_heads, I64Attr:$num_kv_heads, F64Attr:$scale,
                   DefaultValuedAttr<I64Attr, "0">:$window,
                   DefaultValuedAttr<I64Attr, "0">:$relative_buckets,
                   DefaultValuedAttr<I64Attr, "0">:$relative_max_distance,
                   DefaultValuedAttr<BoolAttr, "false">:$relative_bidirectional);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = [{
    $query `,` $key `,` $value `,` $key_cache `,` $value_cache `,` $positions
    `,` $lengths (`relative_bias` $relative_bias^)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Kiln_RelativePositionBucketOp : Kiln_InferOp<"relative_position_bucket"> {
  let summary = "T5 relative-position buckets";
  let description = [{
    For a query sequence (dimension -2 of `query`, length `Tq`) and a key
    sequence (dimension -2 of `key`, `Tk`), returns the `[Tq, Tk]` bucket index
    of each relative position `j - i`, as in T5: half the buckets (all when not
    `bidirectional`) are exact for small distances, the rest logarithmic up to
    `max_distance`. The operands only supply lengths.

    Example:
    ```mlir
    %b = kiln.relative_position_bucket %x, %x {bidirectional = true, num_buckets = 32 : i64, max_distance = 128 : i64}
        : tensor<?x?x512xf32>, tensor<?x?x512xf32> -> tensor<?x?xi32>
    ```
  }];
  let arguments = (ins Kiln_Tensor:$query, Kiln_Tensor:$key,
                   BoolAttr:$bidirectional, I64Attr:$num_buckets,
                   I64Attr:$max_distance);
  let results = (outs RankedTensorOf<[I32]>:$result);
  let assemblyFormat = [{
    $query `,` $key attr-dict `:` type($query) `,` type($key) `->` type($result)
  }];
}

def Kiln_CrossEntropyOp : Kiln_InferOp<"cross_entropy", [DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>]> {
  let summary = "mean softmax cross-entropy over a class dimension";
  let description = [{
    `logits[..., V]` and integer `targets[...]`: the mean over positions whose
    target is not `ignore_index` of `logsumexp(logits) - logits[target]`. The
    result is a rank-0 `f32`. Targets outside `[0, V)` other than
    `ignore_index` are a run-time error.

    Example:
    ```mlir
    %l = kiln.cross_entropy %logits, %targets {ignore_index = -100 : i64} : tensor<?x?x50257xf32>, tensor<?x?xi32> -> tensor<f32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$logits, Kiln_IntTensor:$targets,
                   DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs Kiln_ScalarF32:$result);
  let assemblyFormat = [{
    $logits `,` $targets attr-dict `:` type($logits) `,` type($targets) `->` type($result)
  }];
}

//===----------------------------------------------------------------------===//
// Gradients (produced by kiln-autodiff)
//===----------------------------------------------------------------------===//

def Kiln_CrossEntropyGradOp : Kiln_InferOp<"cross_entropy_grad"> {
  let summary = "gradient of cross_entropy with respect to the logits";
  let description = [{
    For `l = kiln.cross_entropy %logits, %targets`, returns `dL/dlogits` given
    the rank-0 upstream gradient `dL/dl`: at each position whose target is
    not `ignore_index`, `(softmax(logits) - onehot(target)) * upstream / n`,
    where `n` counts those positions; zero elsewhere. The probabilities are
    recomputed row by row, never stored.

    Example:
    ```mlir
    %d = kiln.cross_entropy_grad %logits, %targets, %g {ignore_index = -100 : i64}
        : tensor<?x50xf32>, tensor<?xi32>, tensor<f32> -> tensor<?x50xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$logits, Kiln_IntTensor:$targets,
                   Kiln_ScalarF32:$upstream,
                   DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = [{
    $logits `,` $targets `,` $upstream attr-dict `:` type($logits) `,` type($targets) `,` type($upstream) `->` type($result)
  }];
}

def Kiln_EmbeddingGradOp : Kiln_InferOp<"embedding_grad"> {
  let summary = "gradient of embedding with respect to the table (scatter-add)";
  let description = [{
    For `y = kiln.embedding %table, %ids` with a `[num_embeddings, D]` table,
    adds each row of the upstream gradient `grad[..., D]` into row `ids[...]`
    of a zero `[num_embeddings, D]` result. Repeated ids accumulate.

    Example:
    ```mlir
    %d = kiln.embedding_grad %g, %tokens {num_embeddings = 50257 : i64} : tensor<?x?x768xf32>, tensor<?x?xi32> -> tensor<50257x768xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$grad, Kiln_IntTensor:$indices,
                   I64Attr:$num_embeddings);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $indices attr-dict `:` type($grad) `,` type($indices) `->` type($result)
  }];
}

def Kiln_ActivationGradOp : Kiln_Op<"activation_grad",
    [Pure, AllTypesMatch<["grad", "input", "result"]>]> {
  let summary = "gradient of an elementwise activation";
  let description = [{
    `grad * f'(input)` for `kind` = `relu` (`f' = 1` where `x > 0`, else 0,
    as PyTorch), `gelu` (erf form), `gelu_tanh` or `silu` (not `none`): one fused
    pass instead of the chain of elementwise ops the derivative expands to.

    Example:
    ```mlir
    %dx = kiln.activation_grad %g, %x {kind = #kiln<activation gelu_tanh>} : tensor<?x?x3072xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$grad, Kiln_FloatTensor:$input,
                   Kiln_ActivationAttr:$kind);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$grad `,` $input attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Kiln_SliceGradOp : Kiln_Op<"slice_grad",
    [Pure, AllTypesMatch<["like", "result"]>]> {
  let summary = "gradient of slice: the upstream gradient placed in zeros";
  let description = [{
    A zero tensor shaped like `like` (the sliced input; only its shape is
    read) with `grad` written at `[start, start + size)` along `axis`.

    Example:
    ```mlir
    %d = kiln.slice_grad %g, %wpe {axis = 0 : i64, start = 0 : i64} : tensor<?x768xf32>, tensor<1024x768xf32>
    ```
  }];
  let arguments = (ins Kiln_Tensor:$grad, Kiln_Tensor:$like, I64Attr:$axis,
                   I64Attr:$start);
  let results = (outs Kiln_Tensor:$result);
  let assemblyFormat = "$grad `,` $like attr-dict `:` type($grad) `,` type($like)";
  let hasVerifier = 1;
}

def Kiln_ReshapeLikeOp : Kiln_Op<"reshape_like",
    [Pure, AllTypesMatch<["like", "result"]>]> {
  let summary = "reshape to the run-time shape of another tensor";
  let description = [{
    Reshapes `input` (row-major) to the shape of `like`, whose data is not
    read; the element counts must agree at run time. It carries gradients back
    through `kiln.reshape` when the input's dimensions are only known at run
    time.

    Example:
    ```mlir
    %d = kiln.reshape_like %g, %x : tensor<?x768xf32>, tensor<?x?x768xf32>
    ```
  }];
  let arguments = (ins Kiln_Tensor:$input, Kiln_Tensor:$like);
  let results = (outs Kiln_Tensor:$result);
  let assemblyFormat = "$input `,` $like attr-dict `:` type($input) `,` type($like)";
  let hasVerifier = 1;
}

def Kiln_ZerosLikeOp : Kiln_Op<"zeros_like",
    [Pure, AllTypesMatch<["like", "result"]>]> {
  let summary = "zeros shaped like another tensor";
  let description = [{
    The gradient of a result that does not reach the loss, where the other
    results of the same op do. Only the shape of `like` is read.

    Example:
    ```mlir
    %z = kiln.zeros_like %v : tensor<?x?x768xf32>
    ```
  }];
  let arguments = (ins Kiln_Tensor:$like);
  let results = (outs Kiln_Tensor:$result);
  let assemblyFormat = "$like attr-dict `:` type($like)";
}

def Kiln_ReduceGradOp : Kiln_Op<"reduce_grad",
    [Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "gradient of a reduction, broadcast back to the input";
  let description = [{
    For `y = kiln.reduce_<kind> %input {axes, keepdim}` and the upstream
    gradient `grad` (shaped like `y`), returns `dL/dinput`: `grad` broadcast
    over the reduced axes for `sum`, divided by the number of reduced
    elements for `mean`, and for `max` shared equally by the elements
    equal to the maximum (as `torch.amax`).

    Example:
    ```mlir
    %d = kiln.reduce_grad %g, %x {kind = #kiln<reduce mean>, axes = array<i64: -1>, keepdim = true} : tensor<?x?x1xf32>, tensor<?x?x768xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$grad, Kiln_FloatTensor:$input,
                   Kiln_ReduceKindAttr:$kind, DenseI64ArrayAttr:$axes,
                   DefaultValuedAttr<BoolAttr, "false">:$keepdim);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$grad `,` $input attr-dict `:` type($grad) `,` type($input)";
  let hasVerifier = 1;
}

def Kiln_ConcatGradOp : Kiln_Op<"concat_grad", [Pure]> {
  let summary = "gradient of concat: the upstream gradient cut at the inputs";
  let description = [{
    For `y = kiln.concat %a, %b, ... {axis}`, splits `grad` (shaped like `y`)
    along `axis` into pieces shaped like the concatenated inputs (`like`),
    whose sizes may be known only at run time; their data is not read.

    Example:
    ```mlir
    %da, %db = kiln.concat_grad %g, %a, %b {axis = -1 : i64} : (tensor<?x64xf32>, tensor<?x32xf32>, tensor<?x32xf32>) -> (tensor<?x32xf32>, tensor<?x32xf32>)
    ```
  }];
  let arguments = (ins Kiln_Tensor:$grad, Variadic<Kiln_Tensor>:$like,
                   I64Attr:$axis);
  let results = (outs Variadic<Kiln_Tensor>:$results);
  let assemblyFormat = "$grad `,` $like attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Kiln_AttentionGradOp : Kiln_Op<"attention_grad",
    [Pure, AttrSizedOperandSegments]> {
  let summary = "fused backward of attention";
  let description = [{
    For `o, lse = kiln.attention %q, %k, %v [mask] [bias] {save_lse}` and the
    upstream gradient `grad` (shaped like `o`), returns the gradients of `q`,
    `k`, `v` and, when there is a bias, of the bias (summed to its shape).
    The attention probabilities are recomputed row by row from `q`, `k` and
    the saved `lse`; no `Tq x Tk` matrix is stored. Attributes are those of
    the forward op.

    Example:
    ```mlir
    %dq, %dk, %dv = kiln.attention_grad %g, %q, %k, %v, %o, %lse {num_heads = 12 : i64, num_kv_heads = 12 : i64, scale = 1.250000e-01 : f64, causal = true}
        : (tensor<?x?x768xf32>, tensor<?x?x768xf32>, tensor<?x?x768xf32>, tensor<?x?x768xf32>, tensor<?x?x768xf32>, tensor<?x12x?xf32>)
        -> (tensor<?x?x768xf32>, tensor<?x?x768xf32>, tensor<?x?x768xf32>)
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$grad, Kiln_FloatTensor:$query,
                   Kiln_FloatTensor:$key, Kiln_FloatTensor:$value,
                   Kiln_FloatTensor:$out, RankedTensorOf<[F32]>:$lse,
                   Optional<Kiln_MaskTensor>:$mask,
                   Optional<Kiln_FloatTensor>:$bias,
                   I64Attr:$num_heads, I64Attr:$num_kv_heads, F64Attr:$scale,
                   DefaultValuedAttr<BoolAttr, "false">:$causal,
                   OptionalAttr<Kiln_AttentionPatternAttr>:$pattern);
  let results = (outs Kiln_FloatTensor:$query_grad,
                 Kiln_FloatTensor:$key_grad, Kiln_FloatTensor:$value_grad,
                 Optional<Kiln_FloatTensor>:$bias_grad);
  let assemblyFormat = [{
    $grad `,` $query `,` $key `,` $value `,` $out `,` $lse
    (`mask` $mask^)? (`bias` $bias^)? attr-dict
    `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Training (produced by kiln-train-step)
//===----------------------------------------------------------------------===//

def Kiln_GlobalNormOp : Kiln_Op<"global_norm", [Pure]> {
  let summary = "the L2 norm of all elements of all operands";
  let description = [{
    `sqrt(sum over every operand and element of x^2)`, a rank-0 f32: the
    global gradient norm that clipping uses. Summed in a fixed order, so the
    result does not depend on the thread count.

    Example:
    ```mlir
    %n = kiln.global_norm %g0, %g1 : tensor<64x16xf32>, tensor<16xf32> -> tensor<f32>
    ```
  }];
  let arguments = (ins Variadic<Kiln_FloatTensor>:$inputs);
  let results = (outs Kiln_ScalarF32:$result);
  let assemblyFormat = "$inputs attr-dict `:` type($inputs) `->` type($result)";
  let hasVerifier = 1;
}

def Kiln_OptimizerUpdateOp : Kiln_Op<"optimizer_update",
    [MemoryEffects<[MemWrite]>]> {
  let summary = "updates a parameter in place from its gradient";
  let description = [{
    One optimizer step for the parameter read by `param` (a `kiln.param`):
    the gradient is first scaled by `min(1, max_norm / (grad_norm + 1e-6))`
    when `max_norm > 0` (global-norm clipping), then

    - `kind = #kiln<optimizer adamw>` (as `torch.optim.AdamW`): `p *= 1 - lr wd`;
      `m = b1 m + (1 - b1) g`; `v = b2 v + (1 - b2) g^2`;
      `p -= lr / (1 - b1^step) * m / (sqrt(v) / sqrt(1 - b2^step) + eps)`;
    - `kind = #kiln<optimizer sgd>` (as `torch.optim.SGD`): `g += wd p`;
      `buf = momentum buf + g` (`buf = g` at step 1); `p -= lr buf`.

    `lr` and `step` (1-based, as f32) are run-time inputs so a schedule needs
    no recompilation. The optimizer state (m, v or buf) is owned by the
    runtime, per parameter, and saved with checkpoints. The op writes the
    parameter: it has no results and is never removed or reordered.

    Example:
    ```mlir
    kiln.optimizer_update %w, %gw, %norm, %lr, %step {kind = #kiln<optimizer adamw>, beta1 = 9.000000e-01 : f64, beta2 = 9.990000e-01 : f64, eps = 1.000000e-08 : f64, weight_decay = 1.000000e-02 : f64, momentum = 0.000000e+00 : f64, max_norm = 1.000000e+00 : f64}
        : tensor<64x16xf32>, tensor<64x16xf32>, tensor<f32>, tensor<f32>, tensor<f32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$param, Kiln_FloatTensor:$grad,
                   Kiln_ScalarF32:$grad_norm, Kiln_ScalarF32:$lr,
                   Kiln_ScalarF32:$step, Kiln_OptimizerKindAttr:$kind, F64Attr:$beta1,
                   F64Attr:$beta2, F64Attr:$eps, F64Attr:$weight_decay,
                   F64Attr:$momentum, F64Attr:$max_norm);
  let assemblyFormat = [{
    $param `,` $grad `,` $grad_norm `,` $lr `,` $step attr-dict `:` type($param) `,` type($grad) `,` type($grad_norm) `,` type($lr) `,` type($step)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Fused operations (produced by the kiln-fuse-* passes)
//===----------------------------------------------------------------------===//

def Kiln_FusedMatmulOp : Kiln_Op<"fused_matmul",
    [Pure, AttrSizedOperandSegments, InferTypeOpAdaptorWithIsCompatible]> {
  let summary = "matrix multiplication with a fused epilogue";
  let description = [{
    `act(scale * (op(lhs) x op(rhs) + bias)) + residual`, computed by one
    kernel (on CPU, a oneDNN matmul with post-ops) without writing the
    intermediate products to memory. Shapes are those of `kiln.matmul`;
    `bias` is `[N]`; `residual` has the result's shape; `activation` is
    `none`, `relu`, `gelu`, `gelu_tanh` or `silu`.

    With `reduce_batch`, the batch dimensions are summed as well:
    `sum_b lhs[b]^T x rhs[b]`, a `[M, N]` result, which is one matrix product
    over the flattened rows (the weight gradient of a linear layer). It
    requires `transpose_a`, operands of one rank >= 3 with equal batch
    dimensions, and no bias, activation or residual.

    Example:
    ```mlir
    %y = kiln.fused_matmul %x, %w bias %b residual %r {transpose_b = true, activation = #kiln<activation gelu_tanh>}
        : (tensor<?x?x768xf32>, tensor<3072x768xf32>, tensor<3072xf32>, tensor<?x?x3072xf32>) -> tensor<?x?x3072xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$lhs, Kiln_FloatTensor:$rhs,
                   Optional<Kiln_FloatTensor>:$bias,
                   Optional<Kiln_FloatTensor>:$residual,
                   DefaultValuedAttr<BoolAttr, "false">:$transpose_a,
                   DefaultValuedAttr<BoolAttr, "false">:$transpose_b,
                   DefaultValuedAttr<Kiln_ActivationAttr, "::kiln::Activation::None">:$activation,
                   DefaultValuedAttr<F64Attr, "1.0">:$scale,
                   DefaultValuedAttr<BoolAttr, "false">:$reduce_batch);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs (`bias` $bias^)? (`residual` $residual^)? attr-dict
    `:` functional-type(operands, results)
  }];
}

def Kiln_AddNormOp : Kiln_Op<"add_norm",
    [Pure, InferTypeOpAdaptorWithIsCompatible]> {
  let summary = "residual addition followed by layer or RMS normalization";
  let description = [{
    `sum = input + residual` and `result = norm(sum)` in one pass over the
    rows, where `norm` is `kiln.layernorm` (`kind = #kiln<norm layernorm>`, with
    `bias`) or `kiln.rmsnorm` (`kind = #kiln<norm rmsnorm>`, no bias) over the last
    dimension. Both results are returned: the sum is the residual stream the
    next layer adds to.

    Example:
    ```mlir
    %sum, %y = kiln.add_norm %x, %r, %g bias %b {kind = #kiln<norm layernorm>, eps = 1.0e-05 : f64}
        : (tensor<?x?x768xf32>, tensor<?x?x768xf32>, tensor<768xf32>, tensor<768xf32>) -> (tensor<?x?x768xf32>, tensor<?x?x768xf32>)
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$input, Kiln_FloatTensor:$residual,
                   Kiln_FloatTensor:$weight, Optional<Kiln_FloatTensor>:$bias,
                   Kiln_NormKindAttr:$kind, F64Attr:$eps);
  let results = (outs Kiln_FloatTensor:$sum, Kiln_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $residual `,` $weight (`bias` $bias^)? attr-dict
    `:` functional-type(operands, results)
  }];
}

def Kiln_NormGradOp : Kiln_Op<"norm_grad",
    [Pure, InferTypeOpAdaptorWithIsCompatible]> {
  let summary = "fused backward of layernorm and rmsnorm";
  let description = [{
    For `y = kiln.layernorm %x, %w, %b` (`kind = #kiln<norm layernorm>`) or
    `y = kiln.rmsnorm %x, %w` (`kind = #kiln<norm rmsnorm>`) and the upstream gradient
    `grad` (shaped like `x`), returns `dx`, `dweight` and `dbias` (the bias
    gradient is zeros for rmsnorm). Each row's statistics are recomputed from
    `x`; one pass over the rows computes `dx` and the per-channel sums, with
    no intermediate tensor the size of `x`.

    Example:
    ```mlir
    %dx, %dw, %db = kiln.norm_grad %g, %x, %w {kind = #kiln<norm layernorm>, eps = 1.0e-05 : f64}
        : tensor<?x?x768xf32>, tensor<?x?x768xf32>, tensor<768xf32> -> tensor<?x?x768xf32>, tensor<768xf32>, tensor<768xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$grad, Kiln_FloatTensor:$input,
                   Kiln_FloatTensor:$weight, Kiln_NormKindAttr:$kind, F64Attr:$eps);
  let results = (outs Kiln_FloatTensor:$input_grad,
                 Kiln_FloatTensor:$weight_grad, Kiln_FloatTensor:$bias_grad);
  let assemblyFormat = [{
    $grad `,` $input `,` $weight attr-dict `:` type($grad) `,` type($input) `,`
    type($weight) `->` type($input_grad) `,` type($weight_grad) `,` type($bias_grad)
  }];
}

def Kiln_SoftmaxCrossEntropyOp : Kiln_Op<"softmax_cross_entropy",
    [Pure, InferTypeOpAdaptorWithIsCompatible]> {
  let summary = "cross-entropy loss and its gradient in one pass";
  let description = [{
    `kiln.cross_entropy` and `kiln.cross_entropy_grad` of the same logits,
    targets and `ignore_index` together: the loss and `dL/dlogits` (scaled by
    the rank-0 `upstream`), from one read of each row of logits. The
    probabilities over the classes are never stored: each row's
    log-sum-exp is computed once, and the gradient is written straight from
    it (as llm.c's fused classifier).

    Example:
    ```mlir
    %loss, %dlogits = kiln.softmax_cross_entropy %logits, %targets, %one {ignore_index = -100 : i64}
        : tensor<?x?x50257xf32>, tensor<?x?xi32>, tensor<f32> -> tensor<f32>, tensor<?x?x50257xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$logits, Kiln_IntTensor:$targets,
                   Kiln_ScalarF32:$upstream,
                   DefaultValuedAttr<I64Attr, "-100">:$ignore_index);
  let results = (outs Kiln_ScalarF32:$loss, Kiln_FloatTensor:$logits_grad);
  let assemblyFormat = [{
    $logits `,` $targets `,` $upstream attr-dict `:` type($logits) `,`
    type($targets) `,` type($upstream) `->` type($loss) `,` type($logits_grad)
  }];
}

def Kiln_FusedElementwiseOp : Kiln_Op<"fused_elementwise",
    [Pure, IsolatedFromAbove, SingleBlock]> {
  let summary = "a chain of elementwise ops computed in one pass";
  let description = [{
    Applies the body, a straight-line program of elementwise kiln ops on
    rank-0 tensors, to every element of the result. Block argument `i`
    stands for element of `inputs[i]`, which broadcasts (NumPy rules) to
    the result's shape; `kiln.yield` gives the element. The runtime walks
    the result in tiles small enough for the L1 cache and runs the body on
    each tile, so the chain reads each input once and writes one output, with
    no intermediate tensors.

    The body may use `add`, `sub`, `mul`, `div`, `max`, `min`, `pow`, the
    unary float ops (`neg` to `gelu`), `activation_grad` and rank-0 f32
    `constant`s.

    Example:
    ```mlir
    %y = kiln.fused_elementwise %g, %u : tensor<?x?x1376xf32>, tensor<?x?x1376xf32> -> tensor<?x?x1376xf32> {
    ^bb0(%a: tensor<f32>, %b: tensor<f32>):
      %s = kiln.silu %a : tensor<f32>
      %m = kiln.mul %s, %b : tensor<f32>, tensor<f32> -> tensor<f32>
      kiln.yield %m : tensor<f32>
    }
    ```
  }];
  let arguments = (ins Variadic<Kiln_FloatTensor>:$inputs);
  let results = (outs Kiln_FloatTensor:$result);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $inputs attr-dict `:` type($inputs) `->` type($result) $body
  }];
  let hasVerifier = 1;
  let skipDefaultBuilders = 1;
  let builders = [
    OpBuilder<(ins "::mlir::Type":$result, "::mlir::ValueRange":$inputs)>
  ];
}

def Kiln_YieldOp : Kiln_Op<"yield",
    [Pure, Terminator, HasParent<"FusedElementwiseOp">]> {
  let summary = "the element a fused_elementwise body computes";
  let description = [{
    Terminates the body of `kiln.fused_elementwise` with its one rank-0
    value.

    Example:
    ```mlir
    kiln.yield %m : tensor<f32>
    ```
  }];
  let arguments = (ins RankedTensorOf<[F32]>:$value);
  let assemblyFormat = "$value attr-dict `:` type($value)";
}

#endif // KILN_OPS
