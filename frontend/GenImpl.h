//===- GenImpl.h - internals shared by MLIRGen and the builtins -*- C++ -*-===//
//
// MLIRGen elaborates a model: it evaluates hyperparameters, declares
// parameters, and walks each function body with symbolic shapes, checking
// every operation the way a type checker would and emitting kiln ops as it
// goes. Calls to user functions and blocks are inlined; the ops they produce
// carry call-site locations, so errors and IR both point at the user's lines.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_FRONTEND_GENIMPL_H
#define KILN_FRONTEND_GENIMPL_H

#include "frontend/AST.h"
#include "frontend/Diagnostics.h"
#include "frontend/MLIRGen.h"
#include "ir/KilnOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/StringMap.h"
#include <functional>
#include <map>
#include <optional>

namespace kiln::gen {

/// A dimension: a constant factor times a product of symbolic dimensions.
/// `768` is {768, {}}; `B*T` is {1, {B, T}}; a plain integer is a SymDim too.
struct SymDim {
  int64_t factor = 1;
  std::vector<std::string> syms; // sorted

  static SymDim of(int64_t v) { return SymDim{v, {}}; }
  static SymDim sym(std::string name) { return SymDim{1, {std::move(name)}}; }
  bool isStatic() const { return syms.empty(); }
  bool operator==(const SymDim &o) const {
    return factor == o.factor && syms == o.syms;
  }
  bool operator!=(const SymDim &o) const { return !(*this == o); }
  /// "768", "B", "B*T", "4*T".
  std::string str() const;
};

std::optional<SymDim> mulDims(const SymDim &a, const SymDim &b);
/// Exact division; nullopt when `a` is not a multiple of `b`.
std::optional<SymDim> divDims(const SymDim &a, const SymDim &b);

using Shape = std::vector<SymDim>;

struct Tensor {
  mlir::Value value;
  mlir::Type elt;
  Shape shape;
  int64_t rank() const { return static_cast<int64_t>(shape.size()); }
};

struct ModuleInfo {
  enum Kind { Linear, LayerNorm, RMSNorm, Embedding } kind;
  std::string path; // full path, e.g. "h.3.attn.c_attn"
  int64_t in = 0, out = 0;
  bool bias = false;
  double eps = 0;
};

/// One parameter tensor (a raw `param` or one owned by a module).
struct ParamInfo {
  std::string name; // full path
  mlir::RankedTensorType type;
  Shape shape;
  llvm::SMLoc loc;
};

/// What a relative path names within one parameter scope (the model, or one
/// layer of a block).
struct ScopeEntry {
  const ParamInfo *param = nullptr;
  const ModuleInfo *module = nullptr;
};

struct ParamScope {
  std::string prefix; // "" for the model, "h.3." for a layer
  std::map<std::string, ScopeEntry> entries;
  /// True when some entry's path starts with `path + "."`.
  bool isNamespace(const std::string &path) const;
};

struct BlockInfo {
  const ast::BlockDecl *decl;
  int64_t count;
  std::vector<ParamScope> layers;
  const ast::FnDecl *findFn(llvm::StringRef name) const;
};

struct Val {
  enum Kind {
    Int,       // a compile-time integer or dimension (SymDim)
    Float,     // a compile-time float
    Bool,      // a compile-time bool
    Tensor,    // a run-time tensor
    Tuple,     // several results (split, multi-result functions)
    List,      // a [..] literal
    Module,    // a parameter module (linear, layernorm, ...)
    Namespace, // a prefix of parameter paths ("attn" in attn.c_attn)
    Block,     // a block, all layers (layer < 0) or one
    Fn,        // a user function, or a block function (block != null)
    Builtin,   // a builtin function
  } kind;
  SymDim dim;
  double f = 0;
  bool b = false;
  gen::Tensor t;
  std::vector<Val> items;
  const ModuleInfo *module = nullptr;
  std::string path; // Namespace prefix, Builtin name
  const BlockInfo *block = nullptr;
  int64_t layer = -1;
  const ast::FnDecl *fn = nullptr;
  const ParamScope *scope = nullptr; // Namespace: where the path lives

  static Val ofInt(SymDim d) {
    Val v{Int};
    v.dim = std::move(d);
    return v;
  }
  static Val ofFloat(double f) {
    Val v{Float};
    v.f = f;
    return v;
  }
  static Val ofBool(bool b) {
    Val v{Bool};
    v.b = b;
    return v;
  }
  static Val ofTensor(gen::Tensor t) {
    Val v{Tensor};
    v.t = std::move(t);
    return v;
  }
  bool isNumber() const { return kind == Int || kind == Float; }
  double asDouble() const {
    return kind == Float ? f : static_cast<double>(dim.factor);
  }
};

/// Describes a value for messages: "a tensor f32[B, T, 768]", "an integer".
std::string describe(const Val &v);
std::string typeStr(mlir::Type elt, const Shape &shape);
std::string eltStr(mlir::Type elt);

/// A function activation: locals, symbolic-dimension bindings, the parameter
/// scope (a block layer or the model), and the location of the call site.
struct Frame {
  llvm::StringMap<Val> locals;
  std::map<std::string, SymDim> dims;
  const ParamScope *scope = nullptr;
  const BlockInfo *block = nullptr;
  int64_t layer = -1;
  std::optional<mlir::Location> caller;
  const ast::FnDecl *fn = nullptr;
};

class Gen;

/// The arguments of a builtin call, bound to its signature.
struct BuiltinCall {
  Gen &gen;
  const ast::Expr &call;
  llvm::StringRef name;
  struct Bound {
    Val val;
    llvm::SMLoc loc;
    std::string word; // Enum / Dtype arguments
    runtime::attention::PatternSpec pattern; // Pattern arguments
  };
  std::map<std::string, Bound> args;

  bool has(const std::string &n) const { return args.count(n) != 0; }
  const gen::Tensor &tensor(const std::string &n) const {
    return args.at(n).val.t;
  }
  int64_t i64(const std::string &n, int64_t def) const {
    return has(n) ? args.at(n).val.dim.factor : def;
  }
  double f64(const std::string &n, double def) const {
    return has(n) ? args.at(n).val.asDouble() : def;
  }
  bool boolean(const std::string &n, bool def) const {
    return has(n) ? args.at(n).val.b : def;
  }
  std::string word(const std::string &n, std::string def) const {
    return has(n) ? args.at(n).word : def;
  }
  llvm::SMLoc loc(const std::string &n) const {
    return has(n) ? args.at(n).loc : call.loc;
  }
};

using BuiltinEmitter = std::function<std::optional<Val>(BuiltinCall &)>;

enum class ArgKind {
  Tensor,
  Int,
  Float,
  Bool,
  Enum,
  IntList,
  Shape,
  Dtype,
  TensorList,
  Number,  // a tensor or a compile-time number
  Pattern, // an attention pattern: `sliding_window(256)` (PatternSpec.h)
};

struct ArgSpec {
  const char *name;
  ArgKind kind;
  bool required;
  std::vector<const char *> options; // Enum
};

struct BuiltinDef {
  const char *name;
  std::vector<ArgSpec> args;
  BuiltinEmitter emit;
};

/// The builtin functions of the language (Builtins.cpp).
const std::vector<BuiltinDef> &builtins();
const BuiltinDef *findBuiltin(llvm::StringRef name);

class Gen {
public:
  Gen(mlir::MLIRContext &ctx, Diagnostics &diags, llvm::StringRef filename,
      const CompileOptions &options);

  mlir::OwningOpRef<mlir::ModuleOp> run(const ast::Model &model);

  // --- used by the builtins -------------------------------------------------
  bool error(llvm::SMLoc loc, const llvm::Twine &msg);
  mlir::Location loc(llvm::SMLoc l);
  mlir::OpBuilder &builder() { return b; }
  mlir::MLIRContext &context() { return ctx; }
  mlir::RankedTensorType mlirType(mlir::Type elt, const Shape &shape);
  std::optional<Val> eval(const ast::Expr &e);
  /// A rank-0 constant of the given element type.
  gen::Tensor scalar(mlir::Type elt, double v, llvm::SMLoc l);
  /// Emits a broadcasting binary op, checking shapes symbolically.
  std::optional<gen::Tensor> binary(llvm::StringRef op, const gen::Tensor &a,
                                    const gen::Tensor &c, llvm::SMLoc l);
  std::optional<gen::Tensor> matmul(const gen::Tensor &a, const gen::Tensor &c,
                                    bool ta, bool tb, llvm::SMLoc l);
  std::optional<gen::Tensor> reshape(const gen::Tensor &x, const Shape &shape,
                                     llvm::SMLoc l);
  gen::Tensor make(mlir::Operation *op, mlir::Type elt, Shape shape);
  std::optional<mlir::Type> dtype(llvm::StringRef name);
  /// Reads an attention pattern argument (`sliding_window(256)`), reporting
  /// bad parameters at their location.
  bool pattern(const ast::Expr &e, const std::string &what,
               runtime::attention::PatternSpec &out);
  int64_t nextDropoutSeed() { return dropoutSeed++; }

private:
  // Declarations.
  bool declareHParams(const ast::Model &m);
  bool declareParams(const ast::Model &m);
  bool declareParam(const ast::ParamDecl &p, ParamScope &scope);
  bool addParam(const std::string &name, mlir::Type elt, const Shape &shape,
                llvm::StringRef init, llvm::ArrayRef<double> args,
                llvm::SMLoc l, ParamScope &scope, const std::string &rel);
  bool checkNames(const ast::Model &m);

  // Functions.
  bool emitFunction(const ast::FnDecl &fn);
  std::optional<std::vector<Val>> callFn(const ast::FnDecl &fn,
                                         std::vector<Val> args,
                                         std::vector<llvm::SMLoc> argLocs,
                                         llvm::SMLoc callLoc,
                                         const BlockInfo *block, int64_t layer);
  std::optional<std::vector<Val>> runBody(const ast::FnDecl &fn);
  std::optional<Shape> evalShape(const ast::TypeExpr &t, bool allowUnbound);
  bool matchType(const ast::TypeExpr &t, const gen::Tensor &actual,
                 llvm::SMLoc useLoc, const llvm::Twine &what);

  // Expressions.
  std::optional<Val> lookup(const std::string &name, llvm::SMLoc l);
  std::optional<Val> member(const Val &base, const std::string &name,
                            llvm::SMLoc l);
  std::optional<Val> evalCall(const ast::Expr &e);
  std::optional<Val> evalIndex(const ast::Expr &e);
  std::optional<Val> evalBinary(const ast::Expr &e);
  std::optional<Val> evalUnary(const ast::Expr &e);
  std::optional<Val> evalCond(const ast::Expr &e);
  /// Evaluates a condition (`if c`): it must be a compile-time boolean.
  std::optional<bool> evalCondition(const ast::Expr &e, llvm::StringRef what);
  std::optional<Val> callModule(const ModuleInfo &m,
                                const std::vector<Val> &args, llvm::SMLoc l);
  std::optional<Val> callBuiltin(const BuiltinDef &def, const ast::Expr &e);
  std::optional<Val> paramValue(const ParamInfo &p, llvm::SMLoc l);
  std::optional<Val> scopeEntry(const ParamScope &scope,
                                const std::string &path, llvm::SMLoc l);

  mlir::MLIRContext &ctx;
  Diagnostics &diags;
  llvm::StringRef filename;
  const CompileOptions &options;
  mlir::OpBuilder b;
  /// Counts the operations built, for the kMaxGeneratedOps budget.
  struct OpCounter : mlir::OpBuilder::Listener {
    int64_t count = 0;
    void notifyOperationInserted(mlir::Operation *,
                                 mlir::OpBuilder::InsertPoint) override {
      ++count;
    }
  } opCounter;
  uint64_t paramBytes = 0; // declared so far
  /// False (with an error at `l`) once the model has unrolled to more than
  /// kMaxGeneratedOps operations.
  bool withinOpBudget(llvm::SMLoc l);
  mlir::ModuleOp module;
  const ast::Model *model = nullptr;

  llvm::StringMap<Val> hparams;
  std::vector<std::string> dimNames;
  std::map<std::string, std::unique_ptr<ParamInfo>> params;
  std::vector<std::unique_ptr<ModuleInfo>> modules;
  ParamScope modelScope;
  std::map<std::string, std::unique_ptr<BlockInfo>> blocks;
  /// Parameters left out because their `if` condition is false (path ->
  /// declaration), so that a use names the reason.
  std::map<std::string, const ast::ParamDecl *> omittedParams;
  std::map<std::string, const ast::FnDecl *> fns;

  std::vector<Frame> frames;
  std::map<std::string, mlir::Value> paramCache; // per emitted function
  std::vector<const ast::FnDecl *> callStack;
  int64_t dropoutSeed = 0;
  bool failed = false;
};

} // namespace kiln::gen

#endif
