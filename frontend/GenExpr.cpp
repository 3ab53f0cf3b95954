//===- GenExpr.cpp - expressions: names, operators, calls, indexing -------===//
#include "frontend/GenImpl.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/ScopeExit.h"
#include <cmath>

using namespace kiln;
using namespace kiln::gen;
using llvm::SMLoc;

//===----------------------------------------------------------------------===//
// Names
//===----------------------------------------------------------------------===//

std::optional<Val> Gen::paramValue(const ParamInfo &p, SMLoc l) {
  auto it = paramCache.find(p.name);
  if (it == paramCache.end()) {
    auto op = b.create<ParamOp>(loc(l), p.type,
                                mlir::FlatSymbolRefAttr::get(&ctx, p.name));
    it = paramCache.emplace(p.name, op.getResult()).first;
  }
  return Val::ofTensor(
      gen::Tensor{it->second, p.type.getElementType(), p.shape});
}

std::optional<Val> Gen::scopeEntry(const ParamScope &scope,
                                   const std::string &path, SMLoc l) {
  auto it = scope.entries.find(path);
  if (it != scope.entries.end()) {
    if (it->second.module) {
      Val v{Val::Module};
      v.module = it->second.module;
      return v;
    }
    return paramValue(*it->second.param, l);
  }
  if (scope.isNamespace(path)) {
    Val v{Val::Namespace};
    v.path = path;
    v.scope = &scope;
    return v;
  }
  return std::nullopt;
}

std::optional<Val> Gen::lookup(const std::string &name, SMLoc l) {
  Frame *frame = frames.empty() ? nullptr : &frames.back();
  if (frame) {
    auto it = frame->locals.find(name);
    if (it != frame->locals.end())
      return it->second;
    if (frame->scope && frame->scope != &modelScope)
      if (std::optional<Val> v = scopeEntry(*frame->scope, name, l))
        return v;
  }
  if (frame)
    if (std::optional<Val> v = scopeEntry(modelScope, name, l))
      return v;
  if (frame && frame->block)
    if (const ast::FnDecl *f = frame->block->findFn(name)) {
      Val v{Val::Fn};
      v.fn = f;
      v.block = frame->block;
      v.layer = frame->layer;
      return v;
    }
  auto bit = blocks.find(name);
  if (frame && bit != blocks.end()) {
    Val v{Val::Block};
    v.block = bit->second.get();
    return v;
  }
  // The first part of a dotted block name (`encoder` in encoder.layer).
  if (frame && llvm::any_of(blocks, [&](const auto &kv) {
        return llvm::StringRef(kv.first).starts_with(name + ".");
      })) {
    Val v{Val::Namespace};
    v.path = name;
    v.scope = &modelScope;
    return v;
  }
  auto fit = fns.find(name);
  if (fit != fns.end()) {
    Val v{Val::Fn};
    v.fn = fit->second;
    return v;
  }
  auto hit = hparams.find(name);
  if (hit != hparams.end())
    return hit->second;
  if (llvm::is_contained(dimNames, name)) {
    if (!frame) {
      error(l, "symbolic dimension '" + name +
                   "' has no value here; hyperparameters and parameter "
                   "shapes must be static");
      return std::nullopt;
    }
    auto dit = frame->dims.find(name);
    if (dit == frame->dims.end()) {
      error(l, "dimension '" + name + "' is not bound in '" +
                   (frame->fn ? frame->fn->name : std::string("?")) +
                   "': none of its arguments' types mention it");
      return std::nullopt;
    }
    return Val::ofInt(dit->second);
  }
  if (frame && findBuiltin(name)) {
    Val v{Val::Builtin};
    v.path = name;
    return v;
  }
  // Suggest the closest name in scope.
  std::vector<std::string> candidates;
  if (frame) {
    for (const auto &kv : frame->locals)
      candidates.push_back(kv.first().str());
    for (const BuiltinDef &d : builtins())
      candidates.push_back(d.name);
  }
  for (const auto &kv : hparams)
    candidates.push_back(kv.first().str());
  for (const std::string &d : dimNames)
    candidates.push_back(d);
  for (const auto &kv : fns)
    candidates.push_back(kv.first);
  for (const auto &kv : modelScope.entries)
    candidates.push_back(llvm::StringRef(kv.first).split('.').first.str());
  for (const auto &[path, decl] : omittedParams)
    if (path == name || llvm::StringRef(path).starts_with(name + ".")) {
      error(l, "parameter '" + path +
                   "' is not declared in this configuration: its condition "
                   "at line " +
                   std::to_string(diags.sourceMgr()
                                      .getLineAndColumn(decl->condition->loc)
                                      .first) +
                   " is false; guard the use with the same condition "
                   "('... if COND else ...')");
      return std::nullopt;
    }
  std::string best;
  unsigned bestDist = 3;
  for (const std::string &c : candidates) {
    unsigned d = llvm::StringRef(name).edit_distance(c, true, bestDist);
    if (d < bestDist) {
      bestDist = d;
      best = c;
    }
  }
  error(l,
        "unknown name '" + name + "'" +
            (best.empty() ? std::string() : "; did you mean '" + best + "'?"));
  return std::nullopt;
}

std::optional<Val> Gen::member(const Val &base, const std::string &name,
                               SMLoc l) {
  switch (base.kind) {
  case Val::Namespace: {
    std::string path = base.path + "." + name;
    if (std::optional<Val> v = scopeEntry(*base.scope, path, l))
      return v;
    auto bit = blocks.find(path);
    if (bit != blocks.end()) {
      Val v{Val::Block};
      v.block = bit->second.get();
      return v;
    }
    if (llvm::any_of(blocks, [&](const auto &kv) {
          return llvm::StringRef(kv.first).starts_with(path + ".");
        })) {
      Val v{Val::Namespace};
      v.path = path;
      v.scope = base.scope;
      return v;
    }
    error(l, "'" + base.path + "' has no parameter or block '" + name + "'");
    return std::nullopt;
  }
  case Val::Module: {
    const ModuleInfo &m = *base.module;
    if (name == "weight" || (name == "bias" && m.bias)) {
      auto it = params.find(m.path + "." + name);
      if (it != params.end())
        return paramValue(*it->second, l);
    }
    error(l, "module '" + m.path + "' has no member '" + name + "'; it has " +
                 (m.bias ? "'weight' and 'bias'" : "'weight'"));
    return std::nullopt;
  }
  case Val::Block: {
    const BlockInfo &blk = *base.block;
    if (const ast::FnDecl *f = blk.findFn(name)) {
      Val v{Val::Fn};
      v.fn = f;
      v.block = &blk;
      v.layer = base.layer;
      return v;
    }
    if (base.layer < 0) {
      error(l, "block '" + blk.decl->name + "' has no function '" + name + "'" +
                   (blk.count && blk.layers[0].entries.count(name)
                        ? "; its parameters exist once per layer: use " +
                              blk.decl->name + "[i]." + name
                        : std::string()));
      return std::nullopt;
    }
    if (std::optional<Val> v = scopeEntry(blk.layers[base.layer], name, l))
      return v;
    error(l, "block '" + blk.decl->name + "' has no function or parameter '" +
                 name + "'");
    return std::nullopt;
  }
  default:
    error(l, describe(base) + " has no member '" + name + "'");
    return std::nullopt;
  }
}

//===----------------------------------------------------------------------===//
// Expressions
//===----------------------------------------------------------------------===//

std::optional<Val> Gen::eval(const ast::Expr &e) {
  switch (e.kind) {
  case ast::ExprKind::Int:
    return Val::ofInt(SymDim::of(e.intValue));
  case ast::ExprKind::Float:
    return Val::ofFloat(e.floatValue);
  case ast::ExprKind::Bool:
    return Val::ofBool(e.boolValue);
  case ast::ExprKind::Name:
    return lookup(e.name, e.loc);
  case ast::ExprKind::List: {
    Val v{Val::List};
    for (const auto &item : e.items) {
      std::optional<Val> iv = eval(*item);
      if (!iv)
        return std::nullopt;
      v.items.push_back(*iv);
    }
    return v;
  }
  case ast::ExprKind::Unary:
    return evalUnary(e);
  case ast::ExprKind::Binary:
    return evalBinary(e);
  case ast::ExprKind::Call:
    return evalCall(e);
  case ast::ExprKind::Index:
    return evalIndex(e);
  case ast::ExprKind::Member: {
    std::optional<Val> base = eval(*e.base);
    if (!base)
      return std::nullopt;
    return member(*base, e.name, e.loc);
  }
  case ast::ExprKind::Range:
    error(e.loc, "a range 'a:b' is only allowed inside a subscript x[a:b]");
    return std::nullopt;
  case ast::ExprKind::Cond:
    return evalCond(e);
  }
  return std::nullopt;
}

std::optional<bool> Gen::evalCondition(const ast::Expr &e,
                                       llvm::StringRef what) {
  std::optional<Val> c = eval(e);
  if (!c)
    return std::nullopt;
  if (c->kind != Val::Bool) {
    error(e.loc, what +
                     " must be a boolean known when the model is built "
                     "(from hyperparameters), got " +
                     describe(*c));
    return std::nullopt;
  }
  return c->b;
}

/// `a if c else b`: only the chosen branch is built, so the other may use
/// parameters that a false condition left out.
std::optional<Val> Gen::evalCond(const ast::Expr &e) {
  std::optional<bool> c = evalCondition(*e.base, "the condition of 'if'");
  if (!c)
    return std::nullopt;
  return eval(*e.items[*c ? 0 : 1]);
}

std::optional<Val> Gen::evalUnary(const ast::Expr &e) {
  if (e.name == "not") {
    std::optional<bool> c = evalCondition(*e.base, "the operand of 'not'");
    return c ? std::optional<Val>(Val::ofBool(!*c)) : std::nullopt;
  }
  std::optional<Val> v = eval(*e.base);
  if (!v)
    return std::nullopt;
  switch (v->kind) {
  case Val::Int:
    if (!v->dim.isStatic()) {
      error(e.loc, "cannot negate the symbolic dimension " + v->dim.str());
      return std::nullopt;
    }
    return Val::ofInt(SymDim::of(-v->dim.factor));
  case Val::Float:
    return Val::ofFloat(-v->f);
  case Val::Tensor: {
    if (!llvm::isa<mlir::FloatType>(v->t.elt)) {
      error(e.loc,
            "unary '-' needs a floating-point tensor, got " + describe(*v));
      return std::nullopt;
    }
    auto op = b.create<NegOp>(loc(e.loc), v->t.value.getType(), v->t.value);
    return Val::ofTensor(make(op, v->t.elt, v->t.shape));
  }
  default:
    error(e.loc, "unary '-' cannot be applied to " + describe(*v));
    return std::nullopt;
  }
}

/// Compile-time arithmetic on integers and dimensions.
static std::optional<SymDim> intArith(Gen &g, const std::string &op,
                                      const SymDim &a, const SymDim &c,
                                      SMLoc l) {
  if (op == "*") {
    if (auto r = mulDims(a, c))
      return r;
    g.error(l, "integer overflow in " + a.str() + " * " + c.str());
    return std::nullopt;
  }
  if (op == "/") {
    if (c.isStatic() && c.factor == 0) {
      g.error(l, "division by zero");
      return std::nullopt;
    }
    if (auto r = divDims(a, c))
      return r;
    g.error(l, a.str() + " / " + c.str() +
                   " is not a whole number; integer division must be exact "
                   "(write a float such as 1.0 / 8 for a fraction)");
    return std::nullopt;
  }
  if (op == "**") {
    if (!a.isStatic() || !c.isStatic() || c.factor < 0) {
      g.error(l, "'**' on integers needs static operands and a non-negative "
                 "exponent");
      return std::nullopt;
    }
    int64_t r = 1;
    for (int64_t i = 0; i < c.factor; ++i)
      if (__builtin_mul_overflow(r, a.factor, &r)) {
        g.error(l, "integer overflow in " + a.str() + " ** " + c.str());
        return std::nullopt;
      }
    return SymDim::of(r);
  }
  // + and -: only between like terms (768 + 1, 2*T - T).
  if (a.syms != c.syms) {
    g.error(l, "cannot " + std::string(op == "+" ? "add" : "subtract") + " " +
                   a.str() + " and " + c.str() +
                   "; only like dimensions combine");
    return std::nullopt;
  }
  SymDim r{0, a.syms};
  bool overflow = op == "+"
                      ? __builtin_add_overflow(a.factor, c.factor, &r.factor)
                      : __builtin_sub_overflow(a.factor, c.factor, &r.factor);
  if (overflow) {
    g.error(l, "integer overflow in " + a.str() + " " + op + " " + c.str());
    return std::nullopt;
  }
  if (!r.syms.empty() && r.factor <= 0) {
    g.error(l, a.str() + " " + op + " " + c.str() +
                   " is not a positive dimension");
    return std::nullopt;
  }
  return r;
}

std::optional<Val> Gen::evalBinary(const ast::Expr &e) {
  const std::string &op = e.name;
  std::optional<Val> a = eval(*e.items[0]);
  if (!a)
    return std::nullopt;
  std::optional<Val> c = eval(*e.items[1]);
  if (!c)
    return std::nullopt;
  if (op == "==" || op == "!=") {
    // Compile-time comparisons, for conditions on hyperparameters.
    bool equal;
    if (a->kind == Val::Bool && c->kind == Val::Bool)
      equal = a->b == c->b;
    else if (a->kind == Val::Int && c->kind == Val::Int)
      equal = a->dim == c->dim;
    else if (a->isNumber() && c->isNumber() &&
             (a->kind != Val::Int || a->dim.isStatic()) &&
             (c->kind != Val::Int || c->dim.isStatic()))
      equal = a->asDouble() == c->asDouble();
    else {
      error(e.loc, "'" + op +
                       "' compares numbers or booleans known when "
                       "the model is built, not " +
                       describe(*a) + " and " + describe(*c));
      return std::nullopt;
    }
    return Val::ofBool(op == "==" ? equal : !equal);
  }
  if (a->kind == Val::Tensor || c->kind == Val::Tensor) {
    if (op == "@") {
      if (a->kind != Val::Tensor || c->kind != Val::Tensor) {
        error(e.loc, "'@' multiplies two tensors; got " + describe(*a) +
                         " and " + describe(*c));
        return std::nullopt;
      }
      std::optional<gen::Tensor> r = matmul(a->t, c->t, false, false, e.loc);
      return r ? std::optional<Val>(Val::ofTensor(*r)) : std::nullopt;
    }
    // Promote a number to a rank-0 constant of the tensor's element type.
    const gen::Tensor &ref = a->kind == Val::Tensor ? a->t : c->t;
    auto promote = [&](const Val &v, SMLoc l) -> std::optional<gen::Tensor> {
      if (v.kind == Val::Tensor)
        return v.t;
      if (v.kind == Val::Int && !v.dim.isStatic()) {
        error(l, "the symbolic dimension " + v.dim.str() +
                     " cannot be used as a tensor value");
        return std::nullopt;
      }
      if (!v.isNumber()) {
        error(l, "cannot use " + describe(v) + " in tensor arithmetic");
        return std::nullopt;
      }
      if (v.kind == Val::Float && !llvm::isa<mlir::FloatType>(ref.elt)) {
        error(l, "a fractional number cannot combine with an integer tensor " +
                     typeStr(ref.elt, ref.shape));
        return std::nullopt;
      }
      return scalar(ref.elt, v.asDouble(), l);
    };
    std::optional<gen::Tensor> ta = promote(*a, e.items[0]->loc);
    if (!ta)
      return std::nullopt;
    std::optional<gen::Tensor> tc = promote(*c, e.items[1]->loc);
    if (!tc)
      return std::nullopt;
    std::optional<gen::Tensor> r = binary(op, *ta, *tc, e.loc);
    return r ? std::optional<Val>(Val::ofTensor(*r)) : std::nullopt;
  }
  if (!a->isNumber() || !c->isNumber()) {
    error(e.loc, "operator '" + op + "' cannot combine " + describe(*a) +
                     " and " + describe(*c));
    return std::nullopt;
  }
  if (op == "@") {
    error(e.loc, "'@' multiplies tensors, not numbers");
    return std::nullopt;
  }
  if (a->kind == Val::Int && c->kind == Val::Int) {
    std::optional<SymDim> r = intArith(*this, op, a->dim, c->dim, e.loc);
    return r ? std::optional<Val>(Val::ofInt(*r)) : std::nullopt;
  }
  if ((a->kind == Val::Int && !a->dim.isStatic()) ||
      (c->kind == Val::Int && !c->dim.isStatic())) {
    error(e.loc, "symbolic dimensions only combine with integers");
    return std::nullopt;
  }
  double x = a->asDouble(), y = c->asDouble(), r;
  if (op == "+")
    r = x + y;
  else if (op == "-")
    r = x - y;
  else if (op == "*")
    r = x * y;
  else if (op == "/") {
    if (y == 0) {
      error(e.loc, "division by zero");
      return std::nullopt;
    }
    r = x / y;
  } else
    r = std::pow(x, y);
  if (!std::isfinite(r)) {
    error(e.loc, "the result of '" + op + "' is not a finite number");
    return std::nullopt;
  }
  return Val::ofFloat(r);
}

std::optional<gen::Tensor> Gen::binary(llvm::StringRef op, const gen::Tensor &a,
                                       const gen::Tensor &c, SMLoc l) {
  if (a.elt != c.elt) {
    error(l, "operands of '" + op + "' have different element types " +
                 eltStr(a.elt) + " and " + eltStr(c.elt) +
                 "; convert one with cast(x, " + eltStr(a.elt) + ")");
    return std::nullopt;
  }
  size_t rank = std::max(a.shape.size(), c.shape.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    SymDim da =
        i < a.shape.size() ? a.shape[a.shape.size() - 1 - i] : SymDim::of(1);
    SymDim dc =
        i < c.shape.size() ? c.shape[c.shape.size() - 1 - i] : SymDim::of(1);
    SymDim r;
    if (da == dc || dc == SymDim::of(1))
      r = da;
    else if (da == SymDim::of(1))
      r = dc;
    else {
      error(l, "shapes " + typeStr(a.elt, a.shape) + " and " +
                   typeStr(c.elt, c.shape) + " do not broadcast for '" + op +
                   "': dimension -" + llvm::Twine(i + 1) + " is " + da.str() +
                   " vs " + dc.str());
      return std::nullopt;
    }
    out[rank - 1 - i] = r;
  }
  mlir::Type type = mlirType(a.elt, out);
  mlir::Location ml = loc(l);
  mlir::Operation *o;
  if (op == "+")
    o = b.create<AddOp>(ml, type, a.value, c.value);
  else if (op == "-")
    o = b.create<SubOp>(ml, type, a.value, c.value);
  else if (op == "*")
    o = b.create<MulOp>(ml, type, a.value, c.value);
  else if (op == "/")
    o = b.create<DivOp>(ml, type, a.value, c.value);
  else if (op == "**")
    o = b.create<PowOp>(ml, type, a.value, c.value);
  else if (op == "maximum")
    o = b.create<MaxOp>(ml, type, a.value, c.value);
  else
    o = b.create<MinOp>(ml, type, a.value, c.value);
  return make(o, a.elt, out);
}

std::optional<gen::Tensor> Gen::matmul(const gen::Tensor &a,
                                       const gen::Tensor &c, bool ta, bool tb,
                                       SMLoc l) {
  if (a.rank() < 2 || c.rank() < 2) {
    error(l, "matrix multiplication needs operands of rank >= 2, got " +
                 typeStr(a.elt, a.shape) + " and " + typeStr(c.elt, c.shape));
    return std::nullopt;
  }
  if (a.elt != c.elt || !llvm::isa<mlir::FloatType>(a.elt)) {
    error(l, "matrix multiplication needs two floating-point tensors of the "
             "same element type, got " +
                 typeStr(a.elt, a.shape) + " and " + typeStr(c.elt, c.shape));
    return std::nullopt;
  }
  const Shape &as = a.shape, &cs = c.shape;
  SymDim m = ta ? as.back() : as[as.size() - 2];
  SymDim ka = ta ? as[as.size() - 2] : as.back();
  SymDim kc = tb ? cs.back() : cs[cs.size() - 2];
  SymDim n = tb ? cs[cs.size() - 2] : cs.back();
  if (ka != kc) {
    error(l, "matrix multiplication of " + typeStr(a.elt, as) + " and " +
                 typeStr(c.elt, cs) + ": the contracted dimensions differ (" +
                 ka.str() + " vs " + kc.str() + ")");
    return std::nullopt;
  }
  Shape ba(as.begin(), as.end() - 2), bc(cs.begin(), cs.end() - 2);
  size_t rank = std::max(ba.size(), bc.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    SymDim da = i < ba.size() ? ba[ba.size() - 1 - i] : SymDim::of(1);
    SymDim dc = i < bc.size() ? bc[bc.size() - 1 - i] : SymDim::of(1);
    if (da != dc && da != SymDim::of(1) && dc != SymDim::of(1)) {
      error(l, "matrix multiplication of " + typeStr(a.elt, as) + " and " +
                   typeStr(c.elt, cs) + ": batch dimensions " + da.str() +
                   " and " + dc.str() + " do not broadcast");
      return std::nullopt;
    }
    out[rank - 1 - i] = da == SymDim::of(1) ? dc : da;
  }
  out.push_back(m);
  out.push_back(n);
  auto op = b.create<MatmulOp>(loc(l), mlirType(a.elt, out), a.value, c.value,
                               b.getBoolAttr(ta), b.getBoolAttr(tb));
  return make(op, a.elt, out);
}

std::optional<gen::Tensor> Gen::reshape(const gen::Tensor &x,
                                        const Shape &shape, SMLoc l) {
  SymDim before = SymDim::of(1), after = SymDim::of(1);
  for (const SymDim &d : x.shape)
    before = *mulDims(before, d);
  for (const SymDim &d : shape) {
    std::optional<SymDim> p = mulDims(after, d);
    if (!p) {
      error(l, "reshape target has too many elements");
      return std::nullopt;
    }
    after = *p;
  }
  if (before != after) {
    error(l, "reshape cannot change the number of elements: " +
                 typeStr(x.elt, x.shape) + " has " + before.str() + ", " +
                 typeStr(x.elt, shape) + " has " + after.str());
    return std::nullopt;
  }
  llvm::SmallVector<mlir::Attribute> attr;
  for (const SymDim &d : shape)
    attr.push_back(d.isStatic() ? mlir::Attribute(b.getI64IntegerAttr(d.factor))
                                : mlir::Attribute(b.getStringAttr(d.str())));
  auto op = b.create<ReshapeOp>(loc(l), mlirType(x.elt, shape), x.value,
                                b.getArrayAttr(attr));
  return make(op, x.elt, shape);
}

//===----------------------------------------------------------------------===//
// Calls
//===----------------------------------------------------------------------===//

std::optional<Val> Gen::callModule(const ModuleInfo &m,
                                   const std::vector<Val> &args, SMLoc l) {
  if (args.size() != 1 || args[0].kind != Val::Tensor) {
    error(l,
          "module '" + m.path + "' is called with one tensor, got " +
              (args.size() == 1 ? describe(args[0])
                                : std::to_string(args.size()) + " arguments"));
    return std::nullopt;
  }
  const gen::Tensor &x = args[0].t;
  auto weight = paramValue(*params.at(m.path + ".weight"), l);
  if (m.kind == ModuleInfo::Embedding) {
    if (!llvm::isa<mlir::IntegerType>(x.elt) || x.elt.isInteger(1)) {
      error(l, "embedding '" + m.path +
                   "' is indexed by an integer tensor, "
                   "got " +
                   typeStr(x.elt, x.shape));
      return std::nullopt;
    }
    Shape out = x.shape;
    out.push_back(SymDim::of(m.out));
    mlir::Type f32 = weight->t.elt;
    auto op = b.create<EmbeddingOp>(loc(l), mlirType(f32, out), weight->t.value,
                                    x.value);
    return Val::ofTensor(make(op, f32, out));
  }
  if (x.rank() < 1 || x.shape.back() != SymDim::of(m.in) ||
      x.elt != weight->t.elt) {
    error(l, "module '" + m.path + "' expects a " + eltStr(weight->t.elt) +
                 " tensor whose last dimension is " + std::to_string(m.in) +
                 ", got " + typeStr(x.elt, x.shape));
    return std::nullopt;
  }
  if (m.kind == ModuleInfo::Linear) {
    if (x.rank() < 2) {
      error(l, "module '" + m.path + "' expects a tensor of rank >= 2, got " +
                   typeStr(x.elt, x.shape));
      return std::nullopt;
    }
    std::optional<gen::Tensor> y = matmul(x, weight->t, false, true, l);
    if (!y)
      return std::nullopt;
    if (m.bias) {
      auto bias = paramValue(*params.at(m.path + ".bias"), l);
      y = binary("+", *y, bias->t, l);
      if (!y)
        return std::nullopt;
    }
    return Val::ofTensor(*y);
  }
  mlir::Location ml = loc(l);
  if (m.kind == ModuleInfo::LayerNorm) {
    auto bias = paramValue(*params.at(m.path + ".bias"), l);
    auto op =
        b.create<LayerNormOp>(ml, x.value.getType(), x.value, weight->t.value,
                              bias->t.value, b.getF64FloatAttr(m.eps));
    return Val::ofTensor(make(op, x.elt, x.shape));
  }
  auto op = b.create<RMSNormOp>(ml, x.value.getType(), x.value, weight->t.value,
                                b.getF64FloatAttr(m.eps));
  return Val::ofTensor(make(op, x.elt, x.shape));
}

std::optional<Val> Gen::evalCall(const ast::Expr &e) {
  std::optional<Val> callee = eval(*e.base);
  if (!callee)
    return std::nullopt;
  // A parameter group can share a builtin's name (BERT's `attention.self`);
  // groups are not callable, so a call means the builtin.
  if (callee->kind == Val::Namespace && e.base->kind == ast::ExprKind::Name &&
      findBuiltin(e.base->name)) {
    callee = Val{Val::Builtin};
    callee->path = e.base->name;
  }
  if (callee->kind == Val::Builtin)
    return callBuiltin(*findBuiltin(callee->path), e);
  if (callee->kind != Val::Module && callee->kind != Val::Fn) {
    error(e.base->loc, describe(*callee) + " is not a function and cannot "
                                           "be called");
    return std::nullopt;
  }
  std::vector<Val> args;
  std::vector<SMLoc> argLocs;
  for (const auto &a : e.items) {
    std::optional<Val> v = eval(*a);
    if (!v)
      return std::nullopt;
    args.push_back(*v);
    argLocs.push_back(a->loc);
  }
  if (callee->kind == Val::Module) {
    if (!e.keywords.empty()) {
      error(e.keywords[0].loc, "module calls take no keyword arguments");
      return std::nullopt;
    }
    return callModule(*callee->module, args, e.loc);
  }
  const ast::FnDecl &fn = *callee->fn;
  // Keyword arguments bind by the function's argument names.
  for (const auto &k : e.keywords) {
    auto it = llvm::find_if(
        fn.args, [&](const ast::Arg &a) { return a.name == k.name; });
    if (it == fn.args.end()) {
      error(k.loc, "'" + fn.name + "' has no argument '" + k.name + "'");
      return std::nullopt;
    }
    size_t idx = it - fn.args.begin();
    if (idx < args.size()) {
      error(k.loc,
            "argument '" + k.name + "' of '" + fn.name + "' is given twice");
      return std::nullopt;
    }
    if (idx != args.size()) {
      error(k.loc, "arguments of '" + fn.name + "' before '" + k.name +
                       "' are missing");
      return std::nullopt;
    }
    std::optional<Val> v = eval(*k.value);
    if (!v)
      return std::nullopt;
    args.push_back(*v);
    argLocs.push_back(k.loc);
  }
  auto pack = [](std::vector<Val> results) {
    if (results.size() == 1)
      return results[0];
    Val t{Val::Tuple};
    t.items = std::move(results);
    return t;
  };
  if (callee->block && callee->layer < 0) {
    // h.apply(x, ...): every layer in order, each feeding the next.
    const BlockInfo &blk = *callee->block;
    if (args.empty() || args[0].kind != Val::Tensor) {
      error(e.loc, "applying block '" + blk.decl->name +
                       "' needs a tensor as the first argument");
      return std::nullopt;
    }
    if (fn.results.size() != 1) {
      error(e.loc, "'" + blk.decl->name + "." + fn.name +
                       "' must return exactly one value to be applied "
                       "layer after layer");
      return std::nullopt;
    }
    Val x = args[0];
    for (int64_t i = 0; i < blk.count; ++i) {
      args[0] = x;
      auto r = callFn(fn, args, argLocs, e.loc, &blk, i);
      if (!r)
        return std::nullopt;
      const Val &y = (*r)[0];
      if (y.t.elt != x.t.elt || y.t.shape != x.t.shape) {
        error(e.loc, "layer " + llvm::Twine(i) + " of '" + blk.decl->name +
                         "' returns " + describe(y) + " but takes " +
                         describe(x) +
                         "; a repeated block must keep the type of its "
                         "first argument");
        return std::nullopt;
      }
      x = y;
    }
    return x;
  }
  auto r = callFn(fn, args, argLocs, e.loc, callee->block, callee->layer);
  if (!r)
    return std::nullopt;
  return pack(*r);
}

std::optional<Val> Gen::evalIndex(const ast::Expr &e) {
  std::optional<Val> base = eval(*e.base);
  if (!base)
    return std::nullopt;
  if (base->kind == Val::Block && base->layer < 0) {
    const BlockInfo &blk = *base->block;
    if (e.items.size() != 1) {
      error(e.loc, "a block is indexed by one layer number");
      return std::nullopt;
    }
    std::optional<Val> i = eval(*e.items[0]);
    if (!i)
      return std::nullopt;
    if (i->kind != Val::Int || !i->dim.isStatic() || i->dim.factor < 0 ||
        i->dim.factor >= blk.count) {
      error(e.items[0]->loc, "layer index into '" + blk.decl->name +
                                 "' must be an integer in [0, " +
                                 llvm::Twine(blk.count) + "), got " +
                                 describe(*i));
      return std::nullopt;
    }
    Val v = *base;
    v.layer = i->dim.factor;
    return v;
  }
  if (base->kind != Val::Tensor) {
    error(e.loc, describe(*base) + " cannot be indexed");
    return std::nullopt;
  }
  gen::Tensor x = base->t;
  // table[ids]: an embedding lookup.
  if (e.items.size() == 1 && e.items[0]->kind != ast::ExprKind::Range) {
    std::optional<Val> idx = eval(*e.items[0]);
    if (!idx)
      return std::nullopt;
    if (idx->kind == Val::Tensor) {
      if (x.rank() != 2 || !llvm::isa<mlir::FloatType>(x.elt) ||
          !llvm::isa<mlir::IntegerType>(idx->t.elt) ||
          idx->t.elt.isInteger(1)) {
        error(e.loc, "indexing with a tensor gathers rows of a [V, D] float "
                     "table with integer ids; got " +
                         describe(*base) + " indexed by " + describe(*idx));
        return std::nullopt;
      }
      Shape out = idx->t.shape;
      out.push_back(x.shape[1]);
      auto op = b.create<EmbeddingOp>(loc(e.loc), mlirType(x.elt, out), x.value,
                                      idx->t.value);
      return Val::ofTensor(make(op, x.elt, out));
    }
  }
  if (static_cast<int64_t>(e.items.size()) > x.rank()) {
    error(e.loc, "too many subscripts (" + llvm::Twine(e.items.size()) +
                     ") for " + describe(*base));
    return std::nullopt;
  }
  std::vector<bool> squeeze(x.rank(), false);
  for (size_t axis = 0; axis < e.items.size(); ++axis) {
    const ast::Expr &sub = *e.items[axis];
    SymDim size = x.shape[axis];
    int64_t start = 0;
    SymDim end = size;
    auto staticInt = [&](const ast::Expr &ex,
                         const char *what) -> std::optional<Val> {
      std::optional<Val> v = eval(ex);
      if (!v)
        return std::nullopt;
      if (v->kind != Val::Int) {
        error(ex.loc,
              llvm::Twine(what) + " must be an integer, got " + describe(*v));
        return std::nullopt;
      }
      return v;
    };
    if (sub.kind == ast::ExprKind::Range) {
      if (sub.items[0]) {
        auto lo = staticInt(*sub.items[0], "a slice start");
        if (!lo)
          return std::nullopt;
        if (!lo->dim.isStatic() || lo->dim.factor < 0) {
          error(sub.items[0]->loc, "a slice start must be a non-negative "
                                   "integer, got " +
                                       lo->dim.str());
          return std::nullopt;
        }
        start = lo->dim.factor;
      }
      if (sub.items[1]) {
        auto hi = staticInt(*sub.items[1], "a slice end");
        if (!hi)
          return std::nullopt;
        end = hi->dim;
      }
    } else {
      auto i = staticInt(sub, "a subscript");
      if (!i)
        return std::nullopt;
      if (!i->dim.isStatic()) {
        error(sub.loc, "a single-element subscript must be a static integer, "
                       "got " +
                           i->dim.str());
        return std::nullopt;
      }
      start = i->dim.factor;
      if (start < 0) {
        if (!size.isStatic()) {
          error(sub.loc, "negative subscripts need a static dimension; "
                         "dimension " +
                             llvm::Twine(axis) + " is " + size.str());
          return std::nullopt;
        }
        start += size.factor;
      }
      end = SymDim::of(start + 1);
      squeeze[axis] = true;
    }
    if (end.isStatic() && end.factor <= start) {
      error(sub.loc,
            "empty slice [" + llvm::Twine(start) + ", " + end.str() + ")");
      return std::nullopt;
    }
    if (size.isStatic() && end.isStatic() && end.factor > size.factor) {
      error(sub.loc, "slice end " + end.str() + " is past the size " +
                         size.str() + " of dimension " + llvm::Twine(axis));
      return std::nullopt;
    }
    if (start == 0 && end == size)
      continue; // the whole dimension
    if (!end.isStatic() && start != 0) {
      // [s:T] keeps T - s elements, which is not a product of dimensions.
      error(sub.loc, "a slice with a symbolic end must start at 0");
      return std::nullopt;
    }
    // wpe[0:T] on a static table is fine (T must fit, checked when T is
    // bound); a symbolic end on a symbolic dimension must be that dimension.
    if (!end.isStatic() && !size.isStatic() && end != size) {
      error(sub.loc, "cannot slice dimension " + llvm::Twine(axis) + " of " +
                         describe(*base) + " to " + end.str());
      return std::nullopt;
    }
    Shape out = x.shape;
    out[axis] = end.isStatic() ? SymDim::of(end.factor - start) : end;
    mlir::Attribute endAttr =
        end.isStatic() ? mlir::Attribute(b.getI64IntegerAttr(end.factor))
                       : mlir::Attribute(b.getStringAttr(end.str()));
    auto op = b.create<SliceOp>(loc(sub.loc), mlirType(x.elt, out), x.value,
                                b.getI64IntegerAttr(axis),
                                b.getI64IntegerAttr(start), endAttr);
    x = make(op, x.elt, out);
  }
  if (llvm::is_contained(squeeze, true)) {
    Shape out;
    for (int64_t i = 0; i < x.rank(); ++i)
      if (!squeeze[i])
        out.push_back(x.shape[i]);
    std::optional<gen::Tensor> r = reshape(x, out, e.loc);
    if (!r)
      return std::nullopt;
    x = *r;
  }
  return Val::ofTensor(x);
}
