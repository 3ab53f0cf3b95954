//===- ASTPrinter.cpp - `kiln compile --emit=ast` -------------------------===//
#include "frontend/AST.h"

using namespace kiln::ast;

namespace {

void printExpr(const Expr *e, llvm::raw_ostream &os) {
  if (!e) {
    os << "_";
    return;
  }
  switch (e->kind) {
  case ExprKind::Int:
    os << e->intValue;
    return;
  case ExprKind::Float:
    os << e->floatValue;
    return;
  case ExprKind::Bool:
    os << (e->boolValue ? "true" : "false");
    return;
  case ExprKind::Name:
    os << e->name;
    return;
  case ExprKind::List:
    os << "(list";
    for (const auto &i : e->items) {
      os << " ";
      printExpr(i.get(), os);
    }
    os << ")";
    return;
  case ExprKind::Unary:
    os << "(" << e->name << " ";
    printExpr(e->base.get(), os);
    os << ")";
    return;
  case ExprKind::Binary:
    os << "(" << e->name << " ";
    printExpr(e->items[0].get(), os);
    os << " ";
    printExpr(e->items[1].get(), os);
    os << ")";
    return;
  case ExprKind::Call:
    os << "(call ";
    printExpr(e->base.get(), os);
    for (const auto &i : e->items) {
      os << " ";
      printExpr(i.get(), os);
    }
    for (const auto &k : e->keywords) {
      os << " " << k.name << "=";
      printExpr(k.value.get(), os);
    }
    os << ")";
    return;
  case ExprKind::Index:
    os << "(index ";
    printExpr(e->base.get(), os);
    for (const auto &i : e->items) {
      os << " ";
      printExpr(i.get(), os);
    }
    os << ")";
    return;
  case ExprKind::Member:
    os << "(. ";
    printExpr(e->base.get(), os);
    os << " " << e->name << ")";
    return;
  case ExprKind::Range:
    os << "(range ";
    printExpr(e->items[0].get(), os);
    os << " ";
    printExpr(e->items[1].get(), os);
    os << ")";
    return;
  case ExprKind::Cond:
    os << "(if ";
    printExpr(e->base.get(), os);
    os << " ";
    printExpr(e->items[0].get(), os);
    os << " ";
    printExpr(e->items[1].get(), os);
    os << ")";
    return;
  }
}

void printType(const TypeExpr &t, llvm::raw_ostream &os) {
  os << t.dtype << "[";
  for (size_t i = 0; i < t.dims.size(); ++i) {
    if (i)
      os << ", ";
    printExpr(t.dims[i].get(), os);
  }
  os << "]";
}

void printParam(const ParamDecl &p, llvm::raw_ostream &os, int indent) {
  os.indent(indent) << "param " << p.path;
  if (p.hasType) {
    os << " : ";
    printType(p.type, os);
  }
  os << " = ";
  printExpr(p.init.get(), os);
  if (p.condition) {
    os << " if ";
    printExpr(p.condition.get(), os);
  }
  os << "\n";
}

void printFn(const FnDecl &f, llvm::raw_ostream &os, int indent) {
  os.indent(indent) << "fn " << f.name << "(";
  for (size_t i = 0; i < f.args.size(); ++i) {
    if (i)
      os << ", ";
    os << f.args[i].name << ": ";
    printType(f.args[i].type, os);
  }
  os << ") -> (";
  for (size_t i = 0; i < f.results.size(); ++i) {
    if (i)
      os << ", ";
    printType(f.results[i], os);
  }
  os << ")\n";
  for (const Stmt &s : f.body) {
    os.indent(indent + 2);
    if (s.kind == Stmt::Return) {
      os << "return";
    } else {
      os << "assign";
      for (const auto &t : s.targets)
        os << " " << t.first;
    }
    for (const auto &v : s.values) {
      os << " ";
      printExpr(v.get(), os);
    }
    os << "\n";
  }
}

} // namespace

void kiln::ast::print(const Model &m, llvm::raw_ostream &os) {
  os << "model " << m.name << "\n";
  for (const HParam &h : m.hparams) {
    os << "  hparam " << h.name << " = ";
    printExpr(h.value.get(), os);
    os << "\n";
  }
  for (const auto &d : m.dims)
    os << "  dim " << d.first << "\n";
  for (const ParamDecl &p : m.params)
    printParam(p, os, 2);
  for (const BlockDecl &b : m.blocks) {
    os << "  block " << b.name << " x ";
    printExpr(b.count.get(), os);
    os << "\n";
    for (const ParamDecl &p : b.params)
      printParam(p, os, 4);
    for (const FnDecl &f : b.fns)
      printFn(f, os, 4);
  }
  for (const FnDecl &f : m.fns)
    printFn(f, os, 2);
}
