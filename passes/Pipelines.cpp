//===- Pipelines.cpp - named pass pipelines -------------------------------===//
#include "passes/Passes.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

void kiln::buildFrontendPipeline(mlir::OpPassManager &pm) {
  pm.addNestedPass<mlir::func::FuncOp>(createInferShapes());
  // Folds such as transpose-into-matmul, then removal of what they orphan.
  pm.addPass(mlir::createCanonicalizerPass());
  pm.addPass(mlir::createCSEPass());
}

void kiln::buildFusionPipeline(mlir::OpPassManager &pm) {
  // Order matters: weight-gradient products and the loss first, then the
  // matmul epilogues (which may take a residual add), then add + norm for
  // the adds left, then whatever elementwise chains remain.
  auto &fn = pm.nest<mlir::func::FuncOp>();
  fn.addPass(createFuseMatmulReduce());
  fn.addPass(createFuseCrossEntropy());
  fn.addPass(createFuseMatmulEpilogue());
  fn.addPass(createFuseAddNorm());
  fn.addPass(createFuseElementwise());
  pm.addPass(mlir::createCSEPass());
}

void kiln::buildCompilePipeline(mlir::OpPassManager &pm,
                                const CompilePipelineOptions &options) {
  buildFrontendPipeline(pm);
  if (!options.quantize.empty()) {
    QuantizeWeightsOptions quantize;
    quantize.format = options.quantize;
    quantize.params = options.quantizeParams;
    pm.addPass(createQuantizeWeights(quantize));
  }
  // After quantization, which would otherwise pick the adapters too.
  if (options.lora)
    pm.addPass(createLora(*options.lora));
  if (!options.attention.empty()) {
    SparsifyAttentionOptions sparsify;
    sparsify.pattern = options.attention;
    sparsify.functions = options.attentionFunctions;
    sparsify.blocks = options.attentionBlocks;
    pm.addPass(createSparsifyAttention(sparsify));
  }
  // After the patterns (a sliding window is a rolling cache) and the
  // adapters (decode runs them too); it adds a function, not a gradient.
  if (options.decode != CompilePipelineOptions::Decode::Off) {
    DeriveDecodeOptions decode;
    decode.required =
        options.decode == CompilePipelineOptions::Decode::Required;
    pm.addPass(createDeriveDecode(decode));
  }
  if (!options.grad.empty()) {
    AutodiffOptions autodiff;
    autodiff.function = options.grad;
    autodiff.recompute = options.recompute;
    pm.addPass(createAutodiff(autodiff));
    pm.addPass(mlir::createCanonicalizerPass());
    pm.addPass(mlir::createCSEPass());
  }
  if (options.trainStep) {
    pm.addPass(createTrainStep(*options.trainStep));
    pm.addPass(mlir::createCanonicalizerPass());
  }
  if (options.fuse)
    buildFusionPipeline(pm);
}

namespace {
/// kiln-compile-pipeline's options in kiln-opt.
struct CompilePipelineCLOptions
    : mlir::PassPipelineOptions<CompilePipelineCLOptions> {
  Option<std::string> grad{*this, "grad",
                           llvm::cl::desc("derive GRAD_grad (autodiff)")};
  Option<bool> recompute{*this, "recompute",
                         llvm::cl::desc("recompute block activations"),
                         llvm::cl::init(false)};
  Option<bool> trainStep{*this, "train-step",
                         llvm::cl::desc("derive train_step (AdamW defaults)"),
                         llvm::cl::init(false)};
  Option<bool> fuse{*this, "fuse", llvm::cl::desc("run the fusion passes"),
                    llvm::cl::init(false)};
  Option<std::string> attention{
      *this, "attention",
      llvm::cl::desc("apply an attention pattern (sliding_window:512)")};
  Option<bool> decode{*this, "decode",
                      llvm::cl::desc("derive decode from forward (required)"),
                      llvm::cl::init(false)};
  Option<std::string> quantize{
      *this, "quantize",
      llvm::cl::desc("store matmul weights quantized (int8, int4, nf4)")};
};
} // namespace

void kiln::registerAllKilnPasses() {
  mlir::PassPipelineRegistration<CompilePipelineCLOptions>(
      "kiln-compile-pipeline",
      "The one pipeline of kiln compile: frontend cleanup, autodiff, train "
      "step, fusion",
      [](mlir::OpPassManager &pm, const CompilePipelineCLOptions &o) {
        CompilePipelineOptions options;
        options.grad = o.grad;
        options.recompute = o.recompute;
        if (o.trainStep) {
          options.trainStep.emplace();
          options.trainStep->function = o.grad;
        }
        options.fuse = o.fuse;
        options.attention = o.attention;
        options.quantize = o.quantize;
        if (o.decode)
          options.decode = CompilePipelineOptions::Decode::Required;
        buildCompilePipeline(pm, options);
      });
  registerKilnPasses();
  mlir::PassPipelineRegistration<>(
      "kiln-frontend-pipeline",
      "The passes every module from the kiln frontend goes through",
      [](mlir::OpPassManager &pm) { buildFrontendPipeline(pm); });
  mlir::PassPipelineRegistration<>(
      "kiln-fusion-pipeline",
      "The fusion passes the CPU backend runs before lowering",
      [](mlir::OpPassManager &pm) { buildFusionPipeline(pm); });
}

mlir::LogicalResult kiln::fuse(mlir::ModuleOp module) {
  mlir::PassManager pm(module.getContext());
  buildFusionPipeline(pm);
  return pm.run(module);
}
