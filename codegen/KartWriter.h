//===- KartWriter.h - kiln IR to a .kart artifact ---------------*- C++ -*-===//
#ifndef KILN_CODEGEN_KARTWRITER_H
#define KILN_CODEGEN_KARTWRITER_H

#include "runtime/Safetensors.h"
#include "runtime/Tokenizer.h"

#include "mlir/IR/BuiltinOps.h"

#include <cstdint>
#include <string>
#include <vector>

namespace kiln {

struct ArtifactOptions {
  /// Seeds the initializers declared in the model (normal, uniform).
  uint64_t seed = 0;
  /// Trained weights by parameter name. When set, every parameter must be
  /// present with its exact shape and no other tensor may be.
  const runtime::NamedTensors *weights = nullptr;
  /// LoRA adapters' values by parameter name (a PEFT adapter the driver
  /// read): used before `weights`; an adapter in neither starts from its
  /// initializer. Every tensor must be one of the model's adapters.
  const runtime::NamedTensors *adapters = nullptr;
  /// Record the lowering on the IR (`kiln compile --emit=lowered`): each op
  /// that becomes a kernel gets `kiln.kernel` (the runtime op).
  bool annotate = false;
  /// Keep the weights out of the artifact: they are returned here (by
  /// parameter name, for the caller to write as .safetensors) and the
  /// artifact refers to `externalWeightsFile` instead.
  runtime::NamedTensors *externalWeights = nullptr;
  std::string externalWeightsFile;
  /// A tokenizer to carry in the artifact, so `kiln generate` and Python
  /// read and print text.
  const runtime::Tokenizer *tokenizer = nullptr;
  /// Where the tokenizer came from (its file), for errors.
  std::string tokenizerSource = "the tokenizer";
  /// How the artifact was made (the command that compiles it), for `kiln
  /// inspect`.
  std::vector<std::string> history;
};

/// Lowers a verified kiln module to the CPU execution plan and serializes it
/// with the initialized weights: every kiln op becomes a kernel record (the
/// runtime plans the intermediates' memory per call), parameters are laid
/// out 64-byte aligned. Errors are reported at op locations.
mlir::LogicalResult writeArtifact(mlir::ModuleOp module,
                                  const ArtifactOptions &options,
                                  std::vector<uint8_t> &out);

/// How many parameters the module declares: the most tensors a weights file
/// for it can usefully hold (readers bound their work by it).
size_t countParameters(mlir::ModuleOp module);

/// The deterministic initial value of every element of a parameter: the same
/// name, initializer and seed always give the same bytes, on any machine.
void initializeParameter(llvm::StringRef name, llvm::StringRef init,
                         llvm::ArrayRef<double> args, uint64_t seed,
                         float *data, size_t count);

} // namespace kiln

#endif
