//===- KilnInterfaces.td - kiln op interfaces --------------*- tablegen -*-===//
#ifndef KILN_INTERFACES
#define KILN_INTERFACES

include "mlir/IR/OpBase.td"

def Kiln_DifferentiableOpInterface : OpInterface<"DifferentiableOpInterface"> {
  let cppNamespace = "::kiln";
  let description = [{
    An op that reverse-mode autodiff can differentiate. `buildVJP` receives
    the gradient of the loss with respect to each result (null when a result
    does not reach the loss) and appends, at the builder's insertion point,
    ops that compute the gradient with respect to each operand; it pushes one
    value per operand, null for operands that get no gradient (integer ids,
    targets). The rules live together in ir/KilnVJP.cpp.
  }];
  let methods = [
    InterfaceMethod<
      "Builds the vector-Jacobian product of this op.",
      "::llvm::LogicalResult", "buildVJP",
      (ins "::mlir::OpBuilder &":$builder,
           "::mlir::ValueRange":$resultGrads,
           "::llvm::SmallVectorImpl<::mlir::Value> &":$operandGrads)>
  ];
}

#endif // KILN_INTERFACES
