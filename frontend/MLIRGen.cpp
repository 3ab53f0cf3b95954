//===- MLIRGen.cpp - .kiln syntax tree to the kiln dialect ----------------===//
#include "frontend/GenImpl.h"
#include "runtime/Memory.h"

#include "mlir/IR/Verifier.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/StringExtras.h"
#include <algorithm>
#include <cmath>

using namespace kiln;
using namespace kiln::gen;
using llvm::SMLoc;

//===----------------------------------------------------------------------===//
// Symbolic dimensions and descriptions
//===----------------------------------------------------------------------===//

std::string SymDim::str() const {
  std::string s;
  if (factor != 1 || syms.empty())
    s = std::to_string(factor);
  for (const std::string &n : syms)
    s += (s.empty() ? "" : "*") + n;
  return s;
}

std::optional<SymDim> gen::mulDims(const SymDim &a, const SymDim &b) {
  SymDim r;
  if (__builtin_mul_overflow(a.factor, b.factor, &r.factor))
    return std::nullopt;
  r.syms = a.syms;
  r.syms.insert(r.syms.end(), b.syms.begin(), b.syms.end());
  llvm::sort(r.syms);
  return r;
}

std::optional<SymDim> gen::divDims(const SymDim &a, const SymDim &b) {
  if (b.factor == 0 || a.factor % b.factor != 0)
    return std::nullopt;
  SymDim r{a.factor / b.factor, a.syms};
  for (const std::string &s : b.syms) {
    auto it = llvm::find(r.syms, s);
    if (it == r.syms.end())
      return std::nullopt;
    r.syms.erase(it);
  }
  return r;
}

std::string gen::eltStr(mlir::Type elt) {
  if (elt.isF32())
    return "f32";
  if (elt.isF16())
    return "f16";
  if (elt.isBF16())
    return "bf16";
  if (elt.isF64())
    return "f64";
  if (elt.isInteger(1))
    return "bool";
  if (elt.isInteger(32))
    return "i32";
  if (elt.isInteger(64))
    return "i64";
  return "?";
}

std::string gen::typeStr(mlir::Type elt, const Shape &shape) {
  std::string s = eltStr(elt) + "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + shape[i].str();
  return s + "]";
}

std::string gen::describe(const Val &v) {
  switch (v.kind) {
  case Val::Int:
    return v.dim.isStatic() ? "the integer " + v.dim.str()
                            : "the dimension " + v.dim.str();
  case Val::Float:
    return "a number";
  case Val::Bool:
    return "a boolean";
  case Val::Tensor:
    return "a tensor " + typeStr(v.t.elt, v.t.shape);
  case Val::Tuple:
    return std::to_string(v.items.size()) + " values";
  case Val::List:
    return "a list";
  case Val::Module:
    return "the module '" + v.module->path + "'";
  case Val::Namespace:
    return "the parameter group '" + v.path + "'";
  case Val::Block:
    return "the block '" + v.block->decl->name + "'";
  case Val::Fn:
    return "the function '" + v.fn->name + "'";
  case Val::Builtin:
    return "the builtin '" + v.path + "'";
  }
  return "a value";
}

bool ParamScope::isNamespace(const std::string &path) const {
  auto it = entries.lower_bound(path + ".");
  return it != entries.end() &&
         llvm::StringRef(it->first).starts_with(path + ".");
}

const ast::FnDecl *BlockInfo::findFn(llvm::StringRef name) const {
  for (const ast::FnDecl &f : decl->fns)
    if (f.name == name)
      return &f;
  return nullptr;
}

//===----------------------------------------------------------------------===//
// Gen basics
//===----------------------------------------------------------------------===//

Gen::Gen(mlir::MLIRContext &ctx, Diagnostics &diags, llvm::StringRef filename,
         const CompileOptions &options)
    : ctx(ctx), diags(diags), filename(filename), options(options), b(&ctx) {
  b.setListener(&opCounter);
}

/// How the user overrides hyperparameters, as each front end spells it.
static const std::string kHParamOption =
    kiln::runtime::optionRef("-D", "defines=");

bool Gen::withinOpBudget(SMLoc l) {
  if (opCounter.count <= kMaxGeneratedOps)
    return true;
  return error(l, "the model unrolls to more than " +
                      llvm::Twine(kMaxGeneratedOps) +
                      " operations by here; check the hyperparameters (" +
                      kHParamOption +
                      "): a block's repeat count multiplies "
                      "its size");
}

static std::string bytesText(uint64_t bytes) {
  return runtime::formatBytes(bytes);
}

bool Gen::error(SMLoc l, const llvm::Twine &msg) {
  if (!failed)
    diags.error(l, msg);
  failed = true;
  return false;
}

mlir::Location Gen::loc(SMLoc l) {
  auto lc = diags.sourceMgr().getLineAndColumn(l);
  mlir::Location here =
      mlir::FileLineColLoc::get(&ctx, filename, lc.first, lc.second);
  if (!frames.empty() && frames.back().caller)
    return mlir::CallSiteLoc::get(here, *frames.back().caller);
  return here;
}

std::optional<mlir::Type> Gen::dtype(llvm::StringRef name) {
  if (name == "f32")
    return b.getF32Type();
  if (name == "f16")
    return b.getF16Type();
  if (name == "bf16")
    return b.getBF16Type();
  if (name == "f64")
    return b.getF64Type();
  if (name == "i32")
    return b.getI32Type();
  if (name == "i64")
    return b.getI64Type();
  if (name == "bool")
    return b.getI1Type();
  return std::nullopt;
}

mlir::RankedTensorType Gen::mlirType(mlir::Type elt, const Shape &shape) {
  llvm::SmallVector<int64_t> dims;
  for (const SymDim &d : shape)
    dims.push_back(d.isStatic() ? d.factor : mlir::ShapedType::kDynamic);
  return mlir::RankedTensorType::get(dims, elt);
}

gen::Tensor Gen::make(mlir::Operation *op, mlir::Type elt, Shape shape) {
  return gen::Tensor{op->getResult(0), elt, std::move(shape)};
}

gen::Tensor Gen::scalar(mlir::Type elt, double v, SMLoc l) {
  auto type = mlir::RankedTensorType::get({}, elt);
  mlir::Attribute value;
  if (auto ft = llvm::dyn_cast<mlir::FloatType>(elt))
    value = mlir::DenseElementsAttr::get(type, b.getFloatAttr(ft, v));
  else
    value = mlir::DenseElementsAttr::get(
        type, b.getIntegerAttr(elt, static_cast<int64_t>(v)));
  auto op =
      b.create<ConstantOp>(loc(l), type, llvm::cast<mlir::ElementsAttr>(value));
  return make(op, elt, {});
}

//===----------------------------------------------------------------------===//
// Declarations
//===----------------------------------------------------------------------===//

bool Gen::checkNames(const ast::Model &m) {
  std::map<std::string, SMLoc> seen;
  auto add = [&](const std::string &name, SMLoc l, const char *what) {
    if (findBuiltin(name))
      return error(l, llvm::Twine(what) + " '" + name +
                          "' would hide the builtin function " + name +
                          "(); pick another name");
    auto [it, inserted] = seen.emplace(name, l);
    if (inserted)
      return true;
    error(l, llvm::Twine(what) + " '" + name +
                 "' reuses a name declared "
                 "earlier in the model; pick another name");
    diags.note(it->second, "'" + name + "' is first declared here");
    return false;
  };
  for (const ast::HParam &h : m.hparams)
    if (!add(h.name, h.loc, "hyperparameter"))
      return false;
  for (const auto &d : m.dims)
    if (!add(d.first, d.second, "dimension"))
      return false;
  for (const ast::BlockDecl &blk : m.blocks)
    if (!add(blk.name, blk.loc, "block"))
      return false;
  for (const ast::FnDecl &f : m.fns)
    if (!add(f.name, f.loc, "function"))
      return false;
  for (const ast::BlockDecl &blk : m.blocks) {
    std::map<std::string, SMLoc> local;
    for (const ast::FnDecl &f : blk.fns)
      if (!local.emplace(f.name, f.loc).second)
        return error(f.loc, "function '" + f.name +
                                "' is declared twice in "
                                "block '" +
                                blk.name + "'");
  }
  return true;
}

static std::optional<Val> parseDefine(llvm::StringRef text) {
  text = text.trim();
  if (text == "true" || text == "false")
    return Val::ofBool(text == "true");
  int64_t i;
  if (!text.getAsInteger(10, i))
    return Val::ofInt(SymDim::of(i));
  double d;
  if (!text.getAsDouble(d) && std::isfinite(d))
    return Val::ofFloat(d);
  return std::nullopt;
}

bool Gen::declareHParams(const ast::Model &m) {
  std::map<std::string, const Define *> overrides;
  auto originOf = [](const Define &d) {
    return d.origin.empty() ? runtime::optionRef("-D " + d.name + "=" + d.value,
                                                 "defines={'" + d.name +
                                                     "': " + d.value + "}")
                            : d.origin;
  };
  for (const Define &d : options.defines) {
    const std::string &name = d.name;
    bool known = llvm::any_of(
        m.hparams, [&](const ast::HParam &h) { return h.name == name; });
    if (!known) {
      std::string names;
      for (const ast::HParam &h : m.hparams)
        names += (names.empty() ? "" : ", ") + h.name;
      return error(SMLoc(),
                   originOf(d) + ": model '" + m.name +
                       "' has no hyperparameter '" + name +
                       "'; it has: " + (names.empty() ? "none" : names));
    }
    auto [it, inserted] = overrides.emplace(name, &d);
    if (!inserted && it->second->value != d.value)
      return error(SMLoc(),
                   originOf(d) + " conflicts with " + originOf(*it->second));
    it->second = &d;
  }
  for (const ast::HParam &h : m.hparams) {
    std::optional<Val> v = eval(*h.value);
    if (!v)
      return false;
    if (v->kind != Val::Int && v->kind != Val::Float && v->kind != Val::Bool)
      return error(h.loc, "hyperparameter '" + h.name +
                              "' must be an integer, a number or a boolean, "
                              "not " +
                              describe(*v));
    if (v->kind == Val::Int && !v->dim.isStatic())
      return error(h.loc, "hyperparameter '" + h.name +
                              "' cannot depend on a symbolic dimension");
    auto ov = overrides.find(h.name);
    if (ov != overrides.end()) {
      const std::string &text = ov->second->value;
      std::string where = originOf(*ov->second) + ": ";
      std::optional<Val> o = parseDefine(text);
      if (!o)
        return error(SMLoc(), where + "'" + text +
                                  "' is not an integer, a number or "
                                  "true/false");
      if (v->kind == Val::Int && o->kind != Val::Int)
        return error(SMLoc(), where + "hyperparameter '" + h.name +
                                  "' is an integer (default " + v->dim.str() +
                                  "); give an integer");
      if (v->kind == Val::Bool && o->kind != Val::Bool)
        return error(SMLoc(), where + "hyperparameter '" + h.name +
                                  "' is a boolean; give true or false");
      if (v->kind == Val::Float && o->kind == Val::Bool)
        return error(SMLoc(), where + "hyperparameter '" + h.name +
                                  "' is a number; give a number");
      if (v->kind == Val::Float && o->kind == Val::Int)
        o = Val::ofFloat(static_cast<double>(o->dim.factor));
      v = o;
    }
    hparams[h.name] = *v;
  }
  return true;
}

bool Gen::addParam(const std::string &name, mlir::Type elt, const Shape &shape,
                   llvm::StringRef init, llvm::ArrayRef<double> args, SMLoc l,
                   ParamScope &scope, const std::string &rel) {
  int64_t count = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i].factor <= 0)
      return error(l, "dimension " + llvm::Twine(i) + " of parameter '" + name +
                          "' must be positive, got " +
                          llvm::Twine(shape[i].factor));
    if (__builtin_mul_overflow(count, shape[i].factor, &count) ||
        count > (int64_t(1) << 40))
      return error(l, "parameter '" + name + "' " + typeStr(elt, shape) +
                          " has more than 2^40 elements; check the "
                          "hyperparameters");
  }
  if (params.count(name) || scope.entries.count(rel))
    return error(l, "parameter '" + name + "' is declared twice");
  if (scope.isNamespace(rel))
    return error(l, "parameter '" + name +
                        "' clashes with the parameter "
                        "group of the same name");
  uint64_t bytes = static_cast<uint64_t>(count) *
                   (elt.isIntOrFloat()
                        ? std::max<uint64_t>(1, elt.getIntOrFloatBitWidth() / 8)
                        : 4);
  paramBytes += bytes;
  if (options.maxParameterBytes && paramBytes > options.maxParameterBytes)
    return error(l, "the parameters need " + bytesText(paramBytes) +
                        " by parameter '" + name + "' " + typeStr(elt, shape) +
                        ", more than " + options.parameterLimit +
                        "; check the hyperparameters (" + kHParamOption + ")");
  if (!withinOpBudget(l))
    return false;
  auto info = std::make_unique<ParamInfo>();
  info->name = name;
  info->type = mlirType(elt, shape);
  info->shape = shape;
  info->loc = l;
  mlir::OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToEnd(module.getBody());
  b.create<ParameterOp>(loc(l), name, info->type, init,
                        b.getDenseF64ArrayAttr(args), /*frozen=*/false,
                        /*quant=*/mlir::StringAttr());
  scope.entries[rel].param = info.get();
  params[name] = std::move(info);
  return true;
}

bool Gen::declareParam(const ast::ParamDecl &p, ParamScope &scope) {
  if (p.condition) {
    std::optional<bool> c = evalCondition(
        *p.condition, "the condition of parameter '" + p.path + "'");
    if (!c)
      return false;
    if (!*c) {
      omittedParams[p.path] = &p;
      return true;
    }
  }
  const ast::Expr &call = *p.init;
  const ast::Expr &callee = *call.base;
  if (callee.kind != ast::ExprKind::Name)
    return error(callee.loc, "expected an initializer or module name here");
  const std::string &kind = callee.name;
  std::vector<Val> args;
  for (const auto &a : call.items) {
    std::optional<Val> v = eval(*a);
    if (!v)
      return false;
    args.push_back(*v);
  }
  std::map<std::string, Val> kw;
  for (const auto &k : call.keywords) {
    std::optional<Val> v = eval(*k.value);
    if (!v)
      return false;
    kw[k.name] = *v;
  }
  std::string name = scope.prefix + p.path;
  auto number = [&](const Val &v,
                    const llvm::Twine &what) -> std::optional<double> {
    if (v.kind == Val::Float || (v.kind == Val::Int && v.dim.isStatic()))
      return v.asDouble();
    error(call.loc, what + " must be a number, got " + describe(v));
    return std::nullopt;
  };
  auto size = [&](const Val &v,
                  const llvm::Twine &what) -> std::optional<int64_t> {
    if (v.kind == Val::Int && v.dim.isStatic())
      return v.dim.factor;
    error(call.loc, what + " must be an integer, got " + describe(v));
    return std::nullopt;
  };
  auto checkKeywords = [&](std::initializer_list<const char *> allowed) {
    for (const auto &k : call.keywords)
      if (!llvm::is_contained(allowed, llvm::StringRef(k.name))) {
        std::string list;
        for (const char *a : allowed)
          list += (list.empty() ? "" : ", ") + std::string(a);
        return error(k.loc, kind + "() has no argument '" + k.name + "'" +
                                (list.empty() ? "" : "; it takes " + list));
      }
    return true;
  };
  auto arity = [&](size_t lo, size_t hi, const char *usage) {
    if (args.size() < lo || args.size() > hi)
      return error(call.loc, kind + "() takes " + usage + ", got " +
                                 llvm::Twine(args.size()) + " argument(s)");
    return true;
  };

  if (p.hasType) {
    std::optional<mlir::Type> elt = dtype(p.type.dtype);
    if (!elt)
      return error(p.type.loc, "unknown element type '" + p.type.dtype +
                                   "'; use f32, f16, bf16, f64, i32, i64 or "
                                   "bool");
    std::optional<Shape> shape = evalShape(p.type, false);
    if (!shape)
      return false;
    std::vector<double> initArgs;
    if (kind == "zeros" || kind == "ones") {
      if (!arity(0, 0, "no arguments"))
        return false;
    } else if (kind == "normal" || kind == "constant") {
      if (!arity(1, 1,
                 kind == "normal" ? "one argument, the standard deviation"
                                  : "one argument, the value"))
        return false;
    } else if (kind == "uniform") {
      if (!arity(2, 2, "two arguments, the bounds low and high"))
        return false;
    } else {
      return error(callee.loc, "unknown initializer '" + kind +
                                   "'; use zeros(), ones(), normal(std), "
                                   "uniform(low, high) or constant(value)");
    }
    if (!checkKeywords({}))
      return false;
    for (const Val &a : args) {
      auto v = number(a, kind + "() argument");
      if (!v)
        return false;
      initArgs.push_back(*v);
    }
    if (kind == "normal" && !(initArgs[0] > 0))
      return error(call.loc, "normal() needs a positive standard deviation");
    if (kind == "uniform" && !(initArgs[0] < initArgs[1]))
      return error(call.loc, "uniform(low, high) needs low < high");
    if ((kind == "normal" || kind == "uniform") &&
        !llvm::isa<mlir::FloatType>(*elt))
      return error(call.loc, kind +
                                 "() initializes floating-point "
                                 "parameters; '" +
                                 name + "' is " + p.type.dtype);
    return addParam(name, *elt, *shape, kind, initArgs, p.loc, scope, p.path);
  }

  auto module = std::make_unique<ModuleInfo>();
  module->path = name;
  mlir::Type f32 = b.getF32Type();
  auto kwNumber = [&](const char *k, double def) -> std::optional<double> {
    auto it = kw.find(k);
    if (it == kw.end())
      return def;
    return number(it->second, llvm::Twine(kind) + "() argument '" + k + "'");
  };
  if (kind == "linear") {
    if (!arity(2, 2, "two arguments, linear(n_in, n_out)") ||
        !checkKeywords({"bias", "std"}))
      return false;
    auto in = size(args[0], "linear() n_in"),
         out = size(args[1], "linear() n_out");
    if (!in || !out)
      return false;
    module->kind = ModuleInfo::Linear;
    module->in = *in;
    module->out = *out;
    module->bias = true;
    if (kw.count("bias")) {
      if (kw["bias"].kind != Val::Bool)
        return error(call.loc,
                     "linear() argument 'bias' must be true or false");
      module->bias = kw["bias"].b;
    }
    auto std = kwNumber("std", 0.02);
    if (!std)
      return false;
    if (!(*std > 0))
      return error(call.loc, "linear() argument 'std' must be positive");
    if (!addParam(name + ".weight", f32, {SymDim::of(*out), SymDim::of(*in)},
                  "normal", {*std}, p.loc, scope, p.path + ".weight"))
      return false;
    if (module->bias && !addParam(name + ".bias", f32, {SymDim::of(*out)},
                                  "zeros", {}, p.loc, scope, p.path + ".bias"))
      return false;
  } else if (kind == "layernorm" || kind == "rmsnorm") {
    if (!arity(1, 1, "one argument, the normalized size") ||
        !checkKeywords({"eps"}))
      return false;
    auto n = size(args[0], kind + "() size");
    auto eps = kwNumber("eps", kind == "layernorm" ? 1e-5 : 1e-6);
    if (!n || !eps)
      return false;
    if (!(*eps > 0))
      return error(call.loc, kind + "() argument 'eps' must be positive");
    module->kind =
        kind == "layernorm" ? ModuleInfo::LayerNorm : ModuleInfo::RMSNorm;
    module->in = module->out = *n;
    module->eps = *eps;
    if (!addParam(name + ".weight", f32, {SymDim::of(*n)}, "ones", {}, p.loc,
                  scope, p.path + ".weight"))
      return false;
    if (kind == "layernorm" &&
        !addParam(name + ".bias", f32, {SymDim::of(*n)}, "zeros", {}, p.loc,
                  scope, p.path + ".bias"))
      return false;
  } else if (kind == "embedding") {
    if (!arity(2, 2, "two arguments, embedding(num_embeddings, dim)") ||
        !checkKeywords({"std"}))
      return false;
    auto num = size(args[0], "embedding() num_embeddings");
    auto dim = size(args[1], "embedding() dim");
    auto std = kwNumber("std", 0.02);
    if (!num || !dim || !std)
      return false;
    if (!(*std > 0))
      return error(call.loc, "embedding() argument 'std' must be positive");
    module->kind = ModuleInfo::Embedding;
    module->in = *num;
    module->out = *dim;
    if (!addParam(name + ".weight", f32, {SymDim::of(*num), SymDim::of(*dim)},
                  "normal", {*std}, p.loc, scope, p.path + ".weight"))
      return false;
  } else {
    return error(callee.loc,
                 "unknown module '" + kind +
                     "'; a 'param NAME = ...' declaration takes linear(n_in, "
                     "n_out), layernorm(n), rmsnorm(n) or embedding(n, d); "
                     "for a plain tensor write 'param NAME: f32[...] = "
                     "normal(0.02)'");
  }
  scope.entries[p.path].module = module.get();
  modules.push_back(std::move(module));
  return true;
}

bool Gen::declareParams(const ast::Model &m) {
  // Declare in source order, so the parameter table reads like the file.
  struct Item {
    const char *pos;
    const ast::ParamDecl *param;
    const ast::BlockDecl *block;
  };
  std::vector<Item> items;
  for (const ast::ParamDecl &p : m.params)
    items.push_back({p.loc.getPointer(), &p, nullptr});
  for (const ast::BlockDecl &blk : m.blocks)
    items.push_back({blk.loc.getPointer(), nullptr, &blk});
  llvm::sort(items, [](const Item &a, const Item &c) { return a.pos < c.pos; });
  for (const Item &it : items) {
    if (it.param) {
      if (!declareParam(*it.param, modelScope))
        return false;
      continue;
    }
    const ast::BlockDecl &blk = *it.block;
    std::optional<Val> count = eval(*blk.count);
    if (!count)
      return false;
    if (count->kind != Val::Int || !count->dim.isStatic())
      return error(blk.count->loc, "the repeat count of block '" + blk.name +
                                       "' must be an integer, got " +
                                       describe(*count));
    if (count->dim.factor < 0 || count->dim.factor > 100000)
      return error(blk.count->loc, "the repeat count of block '" + blk.name +
                                       "' must be between 0 and 100000, got " +
                                       count->dim.str());
    auto info = std::make_unique<BlockInfo>();
    info->decl = &blk;
    info->count = count->dim.factor;
    info->layers.resize(info->count);
    for (int64_t i = 0; i < info->count; ++i) {
      uint64_t bytesBefore = paramBytes;
      int64_t opsBefore = opCounter.count;
      info->layers[i].prefix = blk.name + "." + std::to_string(i) + ".";
      for (const ast::ParamDecl &p : blk.params)
        if (!declareParam(p, info->layers[i]))
          return false;
      if (i != 0)
        continue;
      // Every copy has the first one's parameters: the block's size is
      // known now, before the other copies are built.
      uint64_t each = paramBytes - bytesBefore;
      uint64_t total = bytesBefore + each * static_cast<uint64_t>(info->count);
      if (options.maxParameterBytes && total > options.maxParameterBytes)
        return error(
            blk.count->loc,
            "block '" + blk.name + "' repeats " + llvm::Twine(info->count) +
                " times with " + bytesText(each) +
                " of parameters each: the model needs " + bytesText(total) +
                ", more than " + options.parameterLimit +
                "; check the hyperparameters (" + kHParamOption + ")");
      int64_t ops = opCounter.count - opsBefore;
      if (opsBefore + ops * info->count > kMaxGeneratedOps)
        return error(blk.count->loc,
                     "block '" + blk.name + "' repeats " +
                         llvm::Twine(info->count) +
                         " times: the model would unroll to more than " +
                         llvm::Twine(kMaxGeneratedOps) +
                         " operations; check the hyperparameters (" +
                         kHParamOption + ")");
    }
    blocks[blk.name] = std::move(info);
  }
  return true;
}

//===----------------------------------------------------------------------===//
// Functions
//===----------------------------------------------------------------------===//

std::optional<Shape> Gen::evalShape(const ast::TypeExpr &t, bool allowUnbound) {
  Shape shape;
  for (const auto &d : t.dims) {
    // In a signature being matched, a bare dimension name that is not bound
    // yet stands for itself; matchType binds it.
    if (allowUnbound && d->kind == ast::ExprKind::Name &&
        llvm::is_contained(dimNames, d->name) && !frames.empty() &&
        !frames.back().dims.count(d->name)) {
      shape.push_back(SymDim::sym(d->name));
      continue;
    }
    std::optional<Val> v = eval(*d);
    if (!v)
      return std::nullopt;
    if (v->kind != Val::Int) {
      error(d->loc, "a dimension must be an integer or a symbolic dimension, "
                    "got " +
                        describe(*v));
      return std::nullopt;
    }
    if (v->dim.factor <= 0) {
      error(d->loc, "dimension sizes must be positive, got " + v->dim.str());
      return std::nullopt;
    }
    shape.push_back(v->dim);
  }
  return shape;
}

bool Gen::matchType(const ast::TypeExpr &t, const gen::Tensor &actual,
                    SMLoc useLoc, const llvm::Twine &what) {
  std::optional<mlir::Type> elt = dtype(t.dtype);
  if (!elt)
    return error(t.loc, "unknown element type '" + t.dtype +
                            "'; use f32, f16, bf16, f64, i32, i64 or bool");
  Frame &frame = frames.back();
  bool ok = *elt == actual.elt && t.dims.size() == actual.shape.size();
  Shape declared;
  for (size_t i = 0; ok && i < t.dims.size(); ++i) {
    const ast::Expr &d = *t.dims[i];
    if (d.kind == ast::ExprKind::Name && llvm::is_contained(dimNames, d.name) &&
        !frame.dims.count(d.name)) {
      frame.dims[d.name] = actual.shape[i]; // first use binds the dimension
      declared.push_back(actual.shape[i]);
      continue;
    }
    std::optional<Val> v = eval(d);
    if (!v)
      return false;
    if (v->kind != Val::Int)
      return error(d.loc, "a dimension must be an integer or a symbolic "
                          "dimension, got " +
                              describe(*v));
    declared.push_back(v->dim);
    ok = v->dim == actual.shape[i];
  }
  if (ok)
    return true;
  std::string want = t.dtype + "[";
  for (size_t i = 0; i < t.dims.size(); ++i) {
    want += i ? ", " : "";
    want += i < declared.size() ? declared[i].str() : std::string("...");
  }
  want += "]";
  return error(useLoc, what + " has type " + typeStr(actual.elt, actual.shape) +
                           ", but " + want + " is declared");
}

bool Gen::emitFunction(const ast::FnDecl &fn) {
  frames.emplace_back();
  Frame &frame = frames.back();
  frame.scope = &modelScope;
  frame.fn = &fn;
  for (const std::string &d : dimNames)
    frame.dims[d] = SymDim::sym(d);
  paramCache.clear();

  llvm::SmallVector<mlir::Type> argTypes;
  std::vector<Shape> argShapes;
  std::vector<mlir::Type> argElts;
  for (const ast::Arg &a : fn.args) {
    std::optional<mlir::Type> elt = dtype(a.type.dtype);
    if (!elt)
      return error(a.type.loc, "unknown element type '" + a.type.dtype +
                                   "'; use f32, f16, bf16, f64, i32, i64 or "
                                   "bool");
    std::optional<Shape> shape = evalShape(a.type, false);
    if (!shape)
      return false;
    argTypes.push_back(mlirType(*elt, *shape));
    argShapes.push_back(*shape);
    argElts.push_back(*elt);
  }
  llvm::SmallVector<mlir::Type> resultTypes;
  std::vector<Shape> resultShapes;
  for (const ast::TypeExpr &t : fn.results) {
    std::optional<mlir::Type> elt = dtype(t.dtype);
    if (!elt)
      return error(t.loc, "unknown element type '" + t.dtype +
                              "'; use f32, f16, bf16, f64, i32, i64 or bool");
    std::optional<Shape> shape = evalShape(t, false);
    if (!shape)
      return false;
    resultTypes.push_back(mlirType(*elt, *shape));
    resultShapes.push_back(*shape);
  }
  b.setInsertionPointToEnd(module.getBody());
  auto func = b.create<mlir::func::FuncOp>(
      loc(fn.loc), fn.name, b.getFunctionType(argTypes, resultTypes));
  auto dimsAttr = [&](const Shape &shape) {
    llvm::SmallVector<mlir::Attribute> items;
    for (const SymDim &d : shape)
      items.push_back(d.isStatic()
                          ? mlir::Attribute(b.getI64IntegerAttr(d.factor))
                          : mlir::Attribute(b.getStringAttr(d.str())));
    return b.getArrayAttr(items);
  };
  for (size_t i = 0; i < fn.args.size(); ++i) {
    func.setArgAttr(i, "kiln.name", b.getStringAttr(fn.args[i].name));
    func.setArgAttr(i, "kiln.dims", dimsAttr(argShapes[i]));
  }
  for (size_t i = 0; i < resultShapes.size(); ++i)
    func.setResultAttr(i, "kiln.dims", dimsAttr(resultShapes[i]));
  // A result returned as a plain name (`return logits`) is named after it,
  // the one result of a function otherwise after the function (`loss`):
  // `kiln run` and Python report them so.
  if (resultShapes.size() == 1)
    func.setResultAttr(0, "kiln.name", b.getStringAttr(fn.name));
  if (!fn.body.empty() && fn.body.back().kind == ast::Stmt::Return)
    for (size_t i = 0;
         i < fn.body.back().values.size() && i < resultShapes.size(); ++i)
      if (const ast::ExprPtr &e = fn.body.back().values[i];
          e && e->kind == ast::ExprKind::Name)
        func.setResultAttr(i, "kiln.name", b.getStringAttr(e->name));
  mlir::Block *entry = func.addEntryBlock();
  for (size_t i = 0; i < fn.args.size(); ++i) {
    mlir::BlockArgument arg = entry->getArgument(i);
    arg.setLoc(loc(fn.args[i].loc));
    frame.locals[fn.args[i].name] =
        Val::ofTensor(gen::Tensor{arg, argElts[i], argShapes[i]});
  }
  b.setInsertionPointToEnd(entry);
  callStack.push_back(&fn);
  std::optional<std::vector<Val>> results = runBody(fn);
  callStack.pop_back();
  frames.pop_back();
  if (!results)
    return false;
  llvm::SmallVector<mlir::Value> values;
  for (const Val &v : *results)
    values.push_back(v.t.value);
  b.create<mlir::func::ReturnOp>(loc(fn.body.back().loc), values);
  return true;
}

std::optional<std::vector<Val>> Gen::runBody(const ast::FnDecl &fn) {
  for (size_t si = 0; si < fn.body.size(); ++si) {
    const ast::Stmt &s = fn.body[si];
    if (s.kind == ast::Stmt::Return) {
      if (si + 1 != fn.body.size()) {
        error(fn.body[si + 1].loc, "statement after 'return' is never run; "
                                   "'return' must be the last statement");
        return std::nullopt;
      }
      if (s.values.size() != fn.results.size()) {
        error(s.loc,
              "'" + fn.name + "' declares " + llvm::Twine(fn.results.size()) +
                  " result(s) but returns " + llvm::Twine(s.values.size()));
        return std::nullopt;
      }
      std::vector<Val> out;
      for (size_t i = 0; i < s.values.size(); ++i) {
        std::optional<Val> v = eval(*s.values[i]);
        if (!v)
          return std::nullopt;
        if (v->kind != Val::Tensor) {
          error(s.values[i]->loc,
                "functions return tensors; this is " + describe(*v));
          return std::nullopt;
        }
        if (!matchType(fn.results[i], v->t, s.values[i]->loc,
                       "result " + llvm::Twine(i) + " of '" + fn.name + "'"))
          return std::nullopt;
        out.push_back(*v);
      }
      return out;
    }
    std::optional<Val> v = eval(*s.values[0]);
    if (!v)
      return std::nullopt;
    Frame &frame = frames.back();
    if (s.targets.size() == 1) {
      if (v->kind == Val::Tuple) {
        error(s.loc, "the right-hand side produces " +
                         llvm::Twine(v->items.size()) +
                         " values; unpack them with one name each "
                         "('a, b, c = ...')");
        return std::nullopt;
      }
      frame.locals[s.targets[0].first] = *v;
      continue;
    }
    if (v->kind != Val::Tuple || v->items.size() != s.targets.size()) {
      error(s.loc, "cannot unpack " + describe(*v) + " into " +
                       llvm::Twine(s.targets.size()) + " names");
      return std::nullopt;
    }
    for (size_t i = 0; i < s.targets.size(); ++i)
      frame.locals[s.targets[i].first] = v->items[i];
  }
  error(fn.body.empty() ? fn.loc : fn.body.back().loc,
        "function '" + fn.name + "' must end with a 'return' statement");
  return std::nullopt;
}

std::optional<std::vector<Val>>
Gen::callFn(const ast::FnDecl &fn, std::vector<Val> args,
            std::vector<SMLoc> argLocs, SMLoc callLoc, const BlockInfo *block,
            int64_t layer) {
  if (llvm::is_contained(callStack, &fn)) {
    error(callLoc, "recursive call to '" + fn.name +
                       "'; kiln functions are inlined and cannot recurse");
    return std::nullopt;
  }
  if (!withinOpBudget(callLoc))
    return std::nullopt;
  if (args.size() != fn.args.size()) {
    error(callLoc, "'" + fn.name + "' takes " + llvm::Twine(fn.args.size()) +
                       " argument(s), got " + llvm::Twine(args.size()));
    return std::nullopt;
  }
  mlir::Location callerLoc = loc(callLoc);
  if (block)
    callerLoc = mlir::NameLoc::get(
        b.getStringAttr(block->decl->name + "." + std::to_string(layer)),
        callerLoc);
  Frame frame;
  frame.caller = callerLoc;
  frame.fn = &fn;
  frame.block = block;
  frame.layer = layer;
  frame.scope = block ? &block->layers[layer] : &modelScope;
  frames.push_back(std::move(frame));
  auto pop = llvm::make_scope_exit([&] { frames.pop_back(); });
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i].kind != Val::Tensor) {
      error(argLocs[i], "argument '" + fn.args[i].name + "' of '" + fn.name +
                            "' must be a tensor, got " + describe(args[i]));
      return std::nullopt;
    }
    if (!matchType(fn.args[i].type, args[i].t, argLocs[i],
                   "argument '" + fn.args[i].name + "' of '" + fn.name + "'"))
      return std::nullopt;
    frames.back().locals[fn.args[i].name] = args[i];
  }
  callStack.push_back(&fn);
  std::optional<std::vector<Val>> out = runBody(fn);
  callStack.pop_back();
  return out;
}

mlir::OwningOpRef<mlir::ModuleOp> Gen::run(const ast::Model &m) {
  model = &m;
  mlir::OwningOpRef<mlir::ModuleOp> owned =
      mlir::ModuleOp::create(loc(m.loc), m.name);
  module = *owned;
  for (const auto &d : m.dims)
    dimNames.push_back(d.first);
  if (!checkNames(m) || !declareHParams(m) || !declareParams(m))
    return nullptr;
  for (const ast::FnDecl &f : m.fns)
    fns[f.name] = &f;

  llvm::SmallVector<mlir::NamedAttribute> hp;
  for (const ast::HParam &h : m.hparams) {
    const Val &v = hparams[h.name];
    mlir::Attribute a =
        v.kind == Val::Int ? mlir::Attribute(b.getI64IntegerAttr(v.dim.factor))
        : v.kind == Val::Float ? mlir::Attribute(b.getF64FloatAttr(v.f))
                               : mlir::Attribute(b.getBoolAttr(v.b));
    hp.push_back(b.getNamedAttr(h.name, a));
  }
  llvm::SmallVector<mlir::Attribute> dims;
  for (const std::string &d : dimNames)
    dims.push_back(b.getStringAttr(d));
  module->setAttr("kiln.model", b.getStringAttr(m.name));
  module->setAttr("kiln.hparams", b.getDictionaryAttr(hp));
  module->setAttr("kiln.dims", b.getArrayAttr(dims));

  for (const ast::FnDecl &f : m.fns)
    if (!emitFunction(f))
      return nullptr;
  if (failed)
    return nullptr;
  return owned;
}

mlir::OwningOpRef<mlir::ModuleOp> kiln::mlirGen(mlir::MLIRContext &ctx,
                                                const ast::Model &model,
                                                Diagnostics &diags,
                                                llvm::StringRef filename,
                                                const CompileOptions &options) {
  ctx.getOrLoadDialect<KilnDialect>();
  ctx.getOrLoadDialect<mlir::func::FuncDialect>();
  Gen gen(ctx, diags, filename, options);
  return gen.run(model);
}
