//===- Driver.cpp - from a .kiln file to verified kiln IR -----------------===//
#include "frontend/Driver.h"
#include "frontend/Parser.h"
#include "ir/KilnOps.h"
#include "ir/Locations.h"
#include "passes/Passes.h"
#include "runtime/Memory.h"
#include "runtime/quant/QuantSpec.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/WithColor.h"

using namespace kiln;

unsigned kiln::loadSourceFile(llvm::StringRef path, llvm::SourceMgr &sm) {
  auto fail = [&](const llvm::Twine &msg) {
    llvm::WithColor::error(llvm::errs(), "kiln") << path << ": " << msg << "\n";
    return 0u;
  };
  if (llvm::sys::fs::is_directory(path))
    return fail("is a directory, not a .kiln model file");
  uint64_t size = 0;
  if (!llvm::sys::fs::file_size(path, size) && size > kMaxSourceBytes)
    return fail("is " + llvm::Twine(size) +
                " bytes; model files are limited "
                "to " +
                llvm::Twine(kMaxSourceBytes) + " bytes");
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/true);
  if (!buffer)
    return fail("cannot read the file: " + buffer.getError().message());
  if ((*buffer)->getBufferSize() == 0)
    return fail("the file is empty; a .kiln file declares one model, e.g. "
                "'model m() { ... }'");
  return sm.AddNewSourceBuffer(std::move(*buffer), llvm::SMLoc());
}

std::optional<ast::Model> kiln::parseBuffer(llvm::SourceMgr &sm, unsigned id) {
  Diagnostics diags(sm);
  return parseModel(sm.getMemoryBuffer(id)->getBuffer(), diags);
}

mlir::OwningOpRef<mlir::ModuleOp>
kiln::compileBuffer(mlir::MLIRContext &ctx, llvm::SourceMgr &sm, unsigned id,
                    const CompileOptions &options) {
  std::optional<mlir::SourceMgrDiagnosticHandler> handler;
  if (!sm.getDiagHandler())
    handler.emplace(sm, &ctx);
  mlir::OwningOpRef<mlir::ModuleOp> module =
      elaborateBuffer(ctx, sm, id, options);
  if (!module)
    return nullptr;
  mlir::PassManager pm(&ctx);
  buildFrontendPipeline(pm);
  if (mlir::failed(pm.run(*module)))
    return nullptr;
  return module;
}

mlir::OwningOpRef<mlir::ModuleOp>
kiln::elaborateBuffer(mlir::MLIRContext &ctx, llvm::SourceMgr &sm, unsigned id,
                      const CompileOptions &options) {
  Diagnostics diags(sm);
  std::optional<ast::Model> model =
      parseModel(sm.getMemoryBuffer(id)->getBuffer(), diags);
  if (!model)
    return nullptr;
  llvm::StringRef filename = sm.getMemoryBuffer(id)->getBufferIdentifier();
  // IR diagnostics (verifier, passes) print against the same source buffers,
  // unless the caller collects diagnostics itself (DiagnosticCapture).
  std::optional<mlir::SourceMgrDiagnosticHandler> handler;
  if (!sm.getDiagHandler())
    handler.emplace(sm, &ctx);
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlirGen(ctx, *model, diags, filename, options);
  if (!module || diags.errors())
    return nullptr;
  if (mlir::failed(mlir::verify(*module)))
    return nullptr;
  return module;
}

static std::string withCommas(int64_t n) {
  std::string s = std::to_string(n), out;
  int count = 0;
  for (auto it = s.rbegin(); it != s.rend(); ++it) {
    if (count && count % 3 == 0)
      out.insert(out.begin(), ',');
    out.insert(out.begin(), *it);
    ++count;
  }
  return out;
}

void kiln::printParameterSummary(mlir::ModuleOp module, llvm::raw_ostream &os) {
  size_t width = 4;
  for (ParameterOp p : module.getOps<ParameterOp>())
    width = std::max(width, p.getSymName().size());
  os << llvm::left_justify("name", width) << "  "
     << llvm::left_justify("shape", 16) << "  dtype  "
     << llvm::right_justify("count", 13) << "  "
     << llvm::left_justify("storage", 25) << llvm::right_justify("bytes", 13)
     << "  init\n";
  int64_t total = 0, tensors = 0;
  uint64_t stored = 0;
  for (ParameterOp p : module.getOps<ParameterOp>()) {
    auto type = llvm::cast<mlir::RankedTensorType>(p.getType());
    std::string shape = "[";
    for (int64_t i = 0; i < type.getRank(); ++i)
      shape += (i ? ", " : "") + std::to_string(type.getDimSize(i));
    shape += "]";
    std::string init = p.getInit().str();
    if (!p.getInitArgs().empty()) {
      init += "(";
      for (size_t i = 0; i < p.getInitArgs().size(); ++i) {
        char v[32];
        snprintf(v, sizeof(v), "%g", p.getInitArgs()[i]);
        init += (i ? ", " : "") + std::string(v);
      }
      init += ")";
    }
    std::string dtype;
    llvm::raw_string_ostream ds(dtype);
    ds << type.getElementType();
    // How it is stored: f32, or quantized (codes and scales together).
    std::string storage = "f32";
    uint64_t bytes = 4 * static_cast<uint64_t>(type.getNumElements());
    kiln::runtime::quant::QuantSpec spec;
    std::string error;
    if (std::optional<llvm::StringRef> q = p.getQuant())
      if (kiln::runtime::quant::parseQuantSpec(q->str(), spec, error)) {
        storage = q->str();
        uint64_t rows = type.getRank() == 2 ? type.getDimSize(0) : 1;
        bytes = kiln::runtime::quant::storedBytes(spec, rows,
                                                  type.getNumElements() / rows);
      }
    os << llvm::left_justify(p.getSymName(), width) << "  "
       << llvm::left_justify(shape, 16) << "  " << llvm::left_justify(dtype, 5)
       << "  " << llvm::right_justify(withCommas(type.getNumElements()), 13)
       << "  " << llvm::left_justify(storage, 25)
       << llvm::right_justify(withCommas(bytes), 13) << "  " << init << "\n";
    total += type.getNumElements();
    stored += bytes;
    ++tensors;
  }
  os << "total: " << withCommas(total) << " parameters in " << tensors
     << " tensors, " << withCommas(stored) << " bytes stored ("
     << llvm::format("%.1f", stored / 1048576.0) << " MiB)\n";
}

kiln::DiagnosticCapture::DiagnosticCapture(llvm::SourceMgr &sm,
                                           mlir::MLIRContext &ctx)
    : sm(sm) {
  sm.setDiagHandler(
      [](const llvm::SMDiagnostic &d, void *self) {
        if (d.getKind() != llvm::SourceMgr::DK_Error)
          return;
        CapturedDiagnostic c;
        c.message = runtime::spellOptions(d.getMessage().str(), true);
        if (d.getLineNo() > 0) { // errors without a place (-D) have none
          c.file = d.getFilename().str();
          c.line = static_cast<unsigned>(d.getLineNo());
          c.column = static_cast<unsigned>(std::max(d.getColumnNo(), 0) + 1);
        }
        static_cast<DiagnosticCapture *>(self)->errors.push_back(c);
      },
      this);
  handler.emplace(&ctx, [this](mlir::Diagnostic &d) {
    if (d.getSeverity() == mlir::DiagnosticSeverity::Error) {
      CapturedDiagnostic c;
      if (mlir::FileLineColLoc f = fileLocation(d.getLocation())) {
        c.file = f.getFilename().str();
        c.line = f.getLine();
        c.column = f.getColumn();
      }
      c.message = runtime::spellOptions(d.str(), true);
      errors.push_back(std::move(c));
    }
    return mlir::success();
  });
}

kiln::DiagnosticCapture::~DiagnosticCapture() { sm.setDiagHandler(nullptr); }

std::string kiln::CapturedDiagnostic::str() const {
  if (file.empty())
    return "error: " + message;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column) +
         ": error: " + message;
}

void kiln::limitParameters(CompileOptions &options, bool embedded) {
  uint64_t memory = runtime::physicalMemory();
  if (memory) {
    options.maxParameterBytes = memory;
    options.parameterLimit =
        "this machine's " + runtime::formatBytes(memory) + " of memory";
  }
  if (embedded && (!memory || runtime::kMaxEmbeddedWeightBytes < memory)) {
    options.maxParameterBytes = runtime::kMaxEmbeddedWeightBytes;
    options.parameterLimit =
        "the " + runtime::formatBytes(runtime::kMaxEmbeddedWeightBytes) +
        " an artifact embeds (keep larger weights beside it with " +
        runtime::optionRef("--external-weights=FILE.safetensors",
                           "external_weights=\"FILE.safetensors\"") +
        ")";
  }
}
