//===- Passes.h - kiln passes and pipelines ---------------------*- C++ -*-===//
#ifndef KILN_PASSES_PASSES_H
#define KILN_PASSES_PASSES_H

#include "ir/KilnDialect.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

#include <optional>
#include <string>
#include <vector>

namespace kiln {

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

/// The passes every frontend module goes through before later stages:
/// shape refinement, canonicalization (folds such as transpose-into-matmul)
/// and CSE. Verification runs around each pass.
void buildFrontendPipeline(mlir::OpPassManager &pm);

/// The fusion passes, in the order the CPU backend runs them before
/// lowering (kiln compile --no-fuse skips them).
void buildFusionPipeline(mlir::OpPassManager &pm);

/// What the one compile pipeline runs after the frontend's passes.
struct CompilePipelineOptions {
  /// Store the parameters `quantizeParams` selects (globs; default: every
  /// matmul weight) quantized as `quantize` says, when not empty.
  std::string quantize;
  std::vector<std::string> quantizeParams;
  /// Add LoRA adapters (kiln-lora) and freeze everything else, when set.
  std::optional<LoraOptions> lora;
  /// Apply this attention pattern (command-line form, ir/AttentionPattern.h)
  /// to the attention ops of `attentionFunctions` and `attentionBlocks`
  /// (all when empty) before autodiff, when not empty.
  std::string attention;
  std::vector<std::string> attentionFunctions, attentionBlocks;
  /// Derive `decode` (incremental decoding with a key/value cache) from
  /// `forward`: never, when the model is a causal decoder, or always (an
  /// error explains why it cannot be).
  enum class Decode { Off, Auto, Required } decode = Decode::Off;
  /// Derive `grad`_grad (reverse-mode autodiff) when not empty.
  std::string grad;
  bool recompute = false;
  /// Derive train_step (needs grad; its `function` is grad).
  std::optional<TrainStepOptions> trainStep;
  /// The fusion passes (before lowering to an artifact).
  bool fuse = false;
};

/// The whole pipeline from the frontend's module: shape inference and
/// cleanup, then autodiff, the train step and fusion as `options` asks.
/// Registered as kiln-compile-pipeline for kiln-opt.
void buildCompilePipeline(mlir::OpPassManager &pm,
                          const CompilePipelineOptions &options);

/// Runs the fusion pipeline on `module`.
mlir::LogicalResult fuse(mlir::ModuleOp module);

/// Registers kiln's passes and named pipelines with MLIR's registry, so that
/// `kiln-opt --kiln-infer-shapes` and `--pass-pipeline=...` find them.
void registerAllKilnPasses();

} // namespace kiln

#endif
