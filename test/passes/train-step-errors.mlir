// RUN: kiln-opt %s --kiln-train-step --verify-diagnostics
// RUN: not kiln-opt %s --kiln-autodiff --kiln-train-step="optimizer=adam" 2>&1 | FileCheck %s --check-prefix=OPT

// OPT: error: kiln-train-step: optimizer must be adamw or sgd, got 'adam'

// expected-error @+1 {{kiln-train-step: the module has no 'loss_grad'; run kiln-autodiff first}}
module {
  func.func @loss(%x: tensor<f32>) -> tensor<f32> {
    return %x : tensor<f32>
  }
}
