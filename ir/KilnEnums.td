//===- KilnEnums.td - the kiln dialect's kinds -------------*- tablegen -*-===//
//
// Every "kind" an op carries is an enum attribute: the parser, the verifier
// and the artifact writer all see the same closed set, and an unknown kind is
// a parse or verifier error, never a silent default. The artifact schema
// (runtime/schema/kart.fbs) has an enum with the same cases for each.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_ENUMS
#define KILN_ENUMS

include "mlir/IR/EnumAttr.td"

class Kiln_I32Enum<string name, string summary, list<I32EnumAttrCase> cases>
    : I32EnumAttr<name, summary, cases> {
  let cppNamespace = "::kiln";
  let genSpecializedAttr = 0;
}

def Kiln_Activation : Kiln_I32Enum<"Activation", "activation function", [
  I32EnumAttrCase<"None", 0, "none">,
  I32EnumAttrCase<"Relu", 1, "relu">,
  I32EnumAttrCase<"Gelu", 2, "gelu">,
  I32EnumAttrCase<"GeluTanh", 3, "gelu_tanh">,
  I32EnumAttrCase<"Silu", 4, "silu">]>;

def Kiln_GeluApproximation : Kiln_I32Enum<"GeluApproximation",
    "GELU form", [
  I32EnumAttrCase<"None", 0, "none">,
  I32EnumAttrCase<"Tanh", 1, "tanh">]>;

def Kiln_RopeStyle : Kiln_I32Enum<"RopeStyle", "rotary embedding layout", [
  I32EnumAttrCase<"Interleaved", 0, "interleaved">,
  I32EnumAttrCase<"Half", 1, "half">]>;

def Kiln_ReduceKind : Kiln_I32Enum<"ReduceKind", "reduction", [
  I32EnumAttrCase<"Sum", 0, "sum">,
  I32EnumAttrCase<"Mean", 1, "mean">,
  I32EnumAttrCase<"Max", 2, "max">]>;

def Kiln_NormKind : Kiln_I32Enum<"NormKind", "normalization", [
  I32EnumAttrCase<"LayerNorm", 0, "layernorm">,
  I32EnumAttrCase<"RMSNorm", 1, "rmsnorm">]>;

def Kiln_OptimizerKind : Kiln_I32Enum<"OptimizerKind", "optimizer", [
  I32EnumAttrCase<"AdamW", 0, "adamw">,
  I32EnumAttrCase<"SGD", 1, "sgd">]>;

#endif
