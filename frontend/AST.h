//===- AST.h - syntax tree of a .kiln model ---------------------*- C++ -*-===//
//
// The tree the parser builds and MLIRGen walks. Every node keeps the source
// position of its first token, so every diagnostic and every MLIR location
// points into the user's file.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_FRONTEND_AST_H
#define KILN_FRONTEND_AST_H

#include "llvm/Support/SMLoc.h"
#include "llvm/Support/raw_ostream.h"
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kiln::ast {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct KeywordArg {
  std::string name;
  llvm::SMLoc loc;
  ExprPtr value;
};

enum class ExprKind {
  Int,    // 42
  Float,  // 1e-5
  Bool,   // true
  Name,   // x
  List,   // [a, b]           items in `items`
  Unary,  // -x, not c         operand in `base`
  Binary, // a + b            operands in `items[0..1]`
  Call,   // f(a, k = v)      callee in `base`, positional in `items`
  Index,  // x[i, 0:T]        indexed in `base`, subscripts in `items`
  Member, // a.b              object in `base`, field in `name`
  Range,  // lo:hi in a subscript; `items` = {lo or null, hi or null}
  Cond,   // a if c else b    condition in `base`, `items` = {a, b}
};

struct Expr {
  ExprKind kind;
  llvm::SMLoc loc;
  int64_t intValue = 0;
  double floatValue = 0;
  bool boolValue = false;
  std::string name; // Name, Member field, Unary/Binary operator spelling
  ExprPtr base;
  std::vector<ExprPtr> items;
  std::vector<KeywordArg> keywords;

  Expr(ExprKind kind, llvm::SMLoc loc) : kind(kind), loc(loc) {}
};

/// `f32[B, T, n_embd]`; `f32` alone is a scalar (rank 0).
struct TypeExpr {
  std::string dtype;
  llvm::SMLoc loc;
  std::vector<ExprPtr> dims;
};

struct Stmt {
  enum Kind { Assign, Return } kind;
  llvm::SMLoc loc;
  std::vector<std::pair<std::string, llvm::SMLoc>> targets; // Assign
  std::vector<ExprPtr> values; // Assign: one value; Return: the results
};

struct Arg {
  std::string name;
  llvm::SMLoc loc;
  TypeExpr type;
};

struct FnDecl {
  std::string name;
  llvm::SMLoc loc;
  std::vector<Arg> args;
  std::vector<TypeExpr> results;
  std::vector<Stmt> body;
};

/// `param a.b: f32[...] = init(...)` (a tensor) or `param a.b = linear(...)`
/// (a module that owns several tensors).
struct ParamDecl {
  std::string path;
  llvm::SMLoc loc;
  bool hasType = false;
  TypeExpr type;
  ExprPtr init; // a Call: the initializer or the module constructor
  /// `param p = ... if COND`: declared only where COND (evaluated from the
  /// hyperparameters) holds; null when unconditional.
  ExprPtr condition;
};

struct BlockDecl {
  std::string name;
  llvm::SMLoc loc;
  ExprPtr count;
  std::vector<ParamDecl> params;
  std::vector<FnDecl> fns;
};

struct HParam {
  std::string name;
  llvm::SMLoc loc;
  ExprPtr value;
};

struct Model {
  std::string name;
  llvm::SMLoc loc;
  std::vector<HParam> hparams;
  std::vector<std::pair<std::string, llvm::SMLoc>> dims;
  std::vector<ParamDecl> params;
  std::vector<BlockDecl> blocks;
  std::vector<FnDecl> fns;
};

/// Writes the tree as indented text (`kiln compile --emit=ast`).
void print(const Model &model, llvm::raw_ostream &os);

} // namespace kiln::ast

#endif
