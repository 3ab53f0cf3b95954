//===- Builtins.cpp - the builtin functions of the kiln language ----------===//
//
// Each builtin is a row in one table: its signature (names, kinds, which are
// required) and an emitter that checks shapes symbolically and creates the
// kiln op. Binding positional and keyword arguments to the signature, and the
// messages for wrong arguments, are shared by all of them.
//
//===----------------------------------------------------------------------===//
#include "frontend/GenImpl.h"
#include "ir/ShapeUtils.h"

#include "llvm/ADT/STLExtras.h"
#include <cmath>

using namespace kiln;
using namespace kiln::gen;
using llvm::SMLoc;

namespace {

std::string usage(const BuiltinDef &def) {
  std::string s = std::string(def.name) + "(";
  for (size_t i = 0; i < def.args.size(); ++i) {
    s += (i ? ", " : "") + std::string(def.args[i].name);
    if (!def.args[i].required)
      s += "=...";
  }
  return s + ")";
}

bool isFloat(mlir::Type t) { return llvm::isa<mlir::FloatType>(t); }
bool isInt(mlir::Type t) {
  return llvm::isa<mlir::IntegerType>(t) && !t.isInteger(1);
}

/// Normalizes an axis against a rank, reporting out-of-range axes.
std::optional<int64_t> axisOf(BuiltinCall &c, const std::string &arg,
                              int64_t axis, int64_t rank) {
  std::optional<int64_t> n = normalizeAxis(axis, rank);
  if (!n)
    c.gen.error(c.loc(arg), c.name + "(): axis " + llvm::Twine(axis) +
                                " is out of range for a tensor of rank " +
                                llvm::Twine(rank));
  return n;
}

std::vector<int64_t> intList(const BuiltinCall &c, const std::string &n,
                             std::vector<int64_t> def) {
  if (!c.has(n))
    return def;
  std::vector<int64_t> out;
  for (const Val &v : c.args.at(n).val.items)
    out.push_back(v.dim.factor);
  return out;
}

template <typename Op> BuiltinEmitter unary(bool floatOnly = true) {
  return [floatOnly](BuiltinCall &c) -> std::optional<Val> {
    const gen::Tensor &x = c.tensor("x");
    if (floatOnly && !isFloat(x.elt)) {
      c.gen.error(c.loc("x"), c.name +
                                  "() needs a floating-point tensor, got " +
                                  typeStr(x.elt, x.shape));
      return std::nullopt;
    }
    auto op = c.gen.builder().create<Op>(c.gen.loc(c.call.loc),
                                         x.value.getType(), x.value);
    return Val::ofTensor(c.gen.make(op, x.elt, x.shape));
  };
}

template <typename Op> BuiltinEmitter reduce() {
  return [](BuiltinCall &c) -> std::optional<Val> {
    const gen::Tensor &x = c.tensor("x");
    if (!isFloat(x.elt)) {
      c.gen.error(c.loc("x"), c.name + "() needs a floating-point tensor");
      return std::nullopt;
    }
    bool keep = c.boolean("keepdim", false);
    std::vector<bool> reduced(x.rank(), false);
    llvm::SmallVector<int64_t> axes;
    for (int64_t a : intList(c, "axis", {-1})) {
      auto n = axisOf(c, "axis", a, x.rank());
      if (!n)
        return std::nullopt;
      if (reduced[*n]) {
        c.gen.error(c.loc("axis"),
                    c.name + "(): axis " + llvm::Twine(a) + " is listed twice");
        return std::nullopt;
      }
      reduced[*n] = true;
      axes.push_back(*n);
    }
    Shape out;
    for (int64_t i = 0; i < x.rank(); ++i)
      if (!reduced[i])
        out.push_back(x.shape[i]);
      else if (keep)
        out.push_back(SymDim::of(1));
    auto &b = c.gen.builder();
    auto op =
        b.create<Op>(c.gen.loc(c.call.loc), c.gen.mlirType(x.elt, out), x.value,
                     b.getDenseI64ArrayAttr(axes), b.getBoolAttr(keep));
    return Val::ofTensor(c.gen.make(op, x.elt, out));
  };
}

/// Checks a [C] normalization weight against x's last dimension.
bool channelParam(BuiltinCall &c, const std::string &n, const gen::Tensor &x) {
  const gen::Tensor &w = c.tensor(n);
  if (w.rank() != 1 || x.rank() < 1 || w.shape[0] != x.shape.back() ||
      w.elt != x.elt) {
    c.gen.error(c.loc(n), c.name + "(): '" + n + "' must be " +
                              typeStr(x.elt, {x.rank() ? x.shape.back()
                                                       : SymDim::of(1)}) +
                              " to match the input " + typeStr(x.elt, x.shape) +
                              ", got " + typeStr(w.elt, w.shape));
    return false;
  }
  return true;
}

std::optional<Val> elementwiseMinMax(BuiltinCall &c) {
  const Val &a = c.args.at("a").val, &bv = c.args.at("b").val;
  if (a.kind != Val::Tensor && bv.kind != Val::Tensor) {
    c.gen.error(c.call.loc, c.name + "() needs at least one tensor");
    return std::nullopt;
  }
  const gen::Tensor &ref = a.kind == Val::Tensor ? a.t : bv.t;
  auto promote = [&](const Val &v,
                     const char *n) -> std::optional<gen::Tensor> {
    if (v.kind == Val::Tensor)
      return v.t;
    if (v.kind == Val::Int && !v.dim.isStatic()) {
      c.gen.error(c.loc(n), "a symbolic dimension is not a tensor value");
      return std::nullopt;
    }
    return c.gen.scalar(ref.elt, v.asDouble(), c.loc(n));
  };
  auto ta = promote(a, "a");
  if (!ta)
    return std::nullopt;
  auto tb = promote(bv, "b");
  if (!tb)
    return std::nullopt;
  auto r = c.gen.binary(c.name, *ta, *tb, c.call.loc);
  return r ? std::optional<Val>(Val::ofTensor(*r)) : std::nullopt;
}

std::vector<BuiltinDef> makeBuiltins() {
  using K = ArgKind;
  std::vector<BuiltinDef> defs;
  auto add = [&](const char *name, std::vector<ArgSpec> args,
                 BuiltinEmitter emit) {
    defs.push_back(BuiltinDef{name, std::move(args), std::move(emit)});
  };

  add("matmul",
      {{"a", K::Tensor, true, {}},
       {"b", K::Tensor, true, {}},
       {"transpose_a", K::Bool, false, {}},
       {"transpose_b", K::Bool, false, {}}},
      [](BuiltinCall &c) -> std::optional<Val> {
        auto r = c.gen.matmul(c.tensor("a"), c.tensor("b"),
                              c.boolean("transpose_a", false),
                              c.boolean("transpose_b", false), c.call.loc);
        return r ? std::optional<Val>(Val::ofTensor(*r)) : std::nullopt;
      });

  add("transpose",
      {{"x", K::Tensor, true, {}}, {"perm", K::IntList, false, {}}},
      [](BuiltinCall &c) -> std::optional<Val> {
        const gen::Tensor &x = c.tensor("x");
        std::vector<int64_t> perm;
        if (c.has("perm")) {
          perm = intList(c, "perm", {});
        } else {
          if (x.rank() < 2) {
            c.gen.error(c.loc("x"), "transpose() without 'perm' swaps the "
                                    "last two dimensions and needs rank >= 2");
            return std::nullopt;
          }
          for (int64_t i = 0; i < x.rank(); ++i)
            perm.push_back(i);
          std::swap(perm[x.rank() - 1], perm[x.rank() - 2]);
        }
        std::vector<bool> seen(x.rank(), false);
        bool ok = static_cast<int64_t>(perm.size()) == x.rank();
        for (int64_t &p : perm) {
          auto n = ok ? normalizeAxis(p, x.rank()) : std::nullopt;
          ok = ok && n && !seen[*n];
          if (ok) {
            seen[*n] = true;
            p = *n;
          }
        }
        if (!ok) {
          c.gen.error(c.loc("perm"), "transpose(): 'perm' must be a "
                                     "permutation of the " +
                                         llvm::Twine(x.rank()) +
                                         " dimensions of " +
                                         typeStr(x.elt, x.shape));
          return std::nullopt;
        }
        Shape out;
        for (int64_t p : perm)
          out.push_back(x.shape[p]);
        auto &b = c.gen.builder();
        auto op = b.create<TransposeOp>(c.gen.loc(c.call.loc),
                                        c.gen.mlirType(x.elt, out), x.value,
                                        b.getDenseI64ArrayAttr(perm));
        return Val::ofTensor(c.gen.make(op, x.elt, out));
      });

  add("reshape", {{"x", K::Tensor, true, {}}, {"shape", K::Shape, true, {}}},
      [](BuiltinCall &c) -> std::optional<Val> {
        Shape shape;
        for (const Val &v : c.args.at("shape").val.items)
          shape.push_back(v.dim);
        auto r = c.gen.reshape(c.tensor("x"), shape, c.call.loc);
        return r ? std::optional<Val>(Val::ofTensor(*r)) : std::nullopt;
      });

  add("split",
      {{"x", K::Tensor, true, {}},
       {"parts", K::Int, true, {}},
       {"axis", K::Int, false, {}}},
      [](BuiltinCall &c) -> std::optional<Val> {
        const gen::Tensor &x = c.tensor("x");
        int64_t parts = c.i64("parts", 0);
        if (parts < 1 || parts > 4096) {
          c.gen.error(c.loc("parts"), "split(): 'parts' must be between 1 and "
                                      "4096, got " +
                                          llvm::Twine(parts));
          return std::nullopt;
        }
        auto axis = axisOf(c, "axis", c.i64("axis", -1), x.rank());
        if (!axis)
          return std::nullopt;
        auto piece = divDims(x.shape[*axis], SymDim::of(parts));
        if (!piece) {
          c.gen.error(c.call.loc, "split(): dimension " + llvm::Twine(*axis) +
                                      " of " + typeStr(x.elt, x.shape) +
                                      " does not divide into " +
                                      llvm::Twine(parts) + " equal parts");
          return std::nullopt;
        }
        Shape out = x.shape;
        out[*axis] = *piece;
        llvm::SmallVector<mlir::Type> types(parts, c.gen.mlirType(x.elt, out));
        auto &b = c.gen.builder();
        auto op = b.create<SplitOp>(c.gen.loc(c.call.loc), types, x.value,
                                    b.getI64IntegerAttr(*axis));
        Val t{Val::Tuple};
        for (mlir::Value r : op.getResults())
          t.items.push_back(Val::ofTensor(gen::Tensor{r, x.elt, out}));
        return t;
      });

  add("concat", {{"xs", K::TensorList, true, {}}, {"axis", K::Int, false, {}}},
      [](BuiltinCall &c) -> std::optional<Val> {
        const auto &items = c.args.at("xs").val.items;
        if (items.empty()) {
          c.gen.error(c.loc("xs"), "concat() needs at least one tensor");
          return std::nullopt;
        }
        const gen::Tensor &first = items[0].t;
        auto axis = axisOf(c, "axis", c.i64("axis", -1), first.rank());
        if (!axis)
          return std::nullopt;
        Shape out = first.shape;
        llvm::SmallVector<mlir::Value> values{first.value};
        for (size_t i = 1; i < items.size(); ++i) {
          const gen::Tensor &t = items[i].t;
          bool ok = t.elt == first.elt && t.rank() == first.rank();
          for (int64_t d = 0; ok && d < t.rank(); ++d)
            ok = d == *axis || t.shape[d] == first.shape[d];
          if (!ok) {
            c.gen.error(c.loc("xs"), "concat(): tensor " + llvm::Twine(i) +
                                         " " + typeStr(t.elt, t.shape) +
                                         " does not match " +
                                         typeStr(first.elt, first.shape) +
                                         " outside the concatenated axis");
            return std::nullopt;
          }
          if (out[*axis].syms == t.shape[*axis].syms)
            out[*axis].factor += t.shape[*axis].factor;
          else {
            c.gen.error(c.loc("xs"),
                        "concat(): cannot add sizes " + out[*axis].str() +
                            " and " + t.shape[*axis].str() + " along the axis");
            return std::nullopt;
          }
          values.push_back(t.value);
        }
        auto &b = c.gen.builder();
        auto op = b.create<ConcatOp>(c.gen.loc(c.call.loc),
                                     c.gen.mlirType(first.elt, out), values,
                                     b.getI64IntegerAttr(*axis));
        return Val::ofTensor(c.gen.make(op, first.elt, out));
      });

  std::vector<ArgSpec> reduceArgs = {{"x", K::Tensor, true, {}},
                                     {"axis", K::IntList, false, {}},
                                     {"keepdim", K::Bool, false, {}}};
  add("sum", reduceArgs, reduce<ReduceSumOp>());
  add("mean", reduceArgs, reduce<ReduceMeanOp>());
  add("max", reduceArgs, reduce<ReduceMaxOp>());
  add("maximum", {{"a", K::Number, true, {}}, {"b", K::Number, true, {}}},
      elementwiseMinMax);
  add("minimum", {{"a", K::Number, true, {}}, {"b", K::Number, true, {}}},
      elementwiseMinMax);

  add("layernorm",
      {{"x", K::Tensor, true, {}},
       {"weight", K::Tensor, true, {}},
       {"bias", K::Tensor, true, {}},
       {"eps", K::Float, false, {}}},
      [](BuiltinCall &c) -> std::optional<Val> {
        const gen::Tensor &x = c.tensor("x");
        double eps = c.f64("eps", 1e-5);
        if (!channelParam(c, "weight", x) || !channelParam(c, "bias", x))
          return std::nullopt;
        if (!(eps > 0)) {
          c.gen.error(c.loc("eps"), "layernorm(): 'eps' must be positive");
          return std::nullopt;
        }
        auto &b = c.gen.builder();
        auto op = b.create<LayerNormOp>(
            c.gen.loc(c.call.loc), x.value.getType(), x.value,
            c.tensor("weight").value, c.tensor("bias").value,
            b.getF64FloatAttr(eps));
        return Val::ofTensor(c.gen.make(op, x.elt, x.shape));
      });

  add("rmsnorm",
      {{"x", K::Tensor, true, {}},
       {"weight", K::Tensor, true, {}},
       {"eps", K::Float, false, {}}},
      [](BuiltinCall &c) -> std::optional<Val> {
        const gen::Tensor &x = c.tensor("x");
        double eps = c.f64("eps", 1e-6);
        if (!channelParam(c, "weight", x))
          return std::nullopt;
        if (!(eps > 0)) {
          c.gen.error(c.loc("eps"), "rmsnorm(): 'eps' must be positive");
          return std::nullopt;
        }
        auto &b = c.gen.builder();
        auto op = b.create<RMSNormOp>(c.gen.loc(c.call.loc), x.value.getType(),
                                      x.value, c.tensor("weight").value,
                                      b.getF64FloatAttr(eps));
        return Val::ofTensor(c.gen.make(op, x.elt, x.shape));
      });

  add("softmax", {{"x", K::Tensor, true, {}}, {"axis", K::Int, false, {}}},
      [](BuiltinCall &c) -> std::optional<Val> {
        const gen::Tensor &x = c.tensor("x");
        if (!isFloat(x.elt)) {
          c.gen.error(c.loc("x"), "softmax() needs a floating-point tensor");
          return std::nullopt;
        }
        auto axis = axisOf(c, "axis", c.i64("axis", -1), x.rank());
        if (!axis)
          return std::nullopt;
        auto &b = c.gen.builder();
        auto op = b.create<SoftmaxOp>(c.gen.loc(c.call.loc), x.value.getType(),
                                      x.value, b.getI64IntegerAttr(*axis));
        return Val::ofTensor(c.gen.make(op, x.elt, x.shape));
      });

  auto gelu = [](BuiltinCall &c, llvm::StringRef approx) -> std::optional<Val> {
    const gen::Tensor &x = c.tensor("x");
    if (!isFloat(x.elt)) {
      c.gen.error(c.loc("x"), c.name + "() needs a floating-point tensor");
      return std::nullopt;
    }
    auto &b = c.gen.builder();
    auto op = b.create<GeluOp>(c.gen.loc(c.call.loc), x.value.getType(),
                               x.value, *symbolizeGeluApproximation(approx));
    return Val::ofTensor(c.gen.make(op, x.elt, x.shape));
  };
  add("gelu",
      {{"x", K::Tensor, true, {}},
       {"approximate", K::Enum, false, {"none", "tanh"}}},
      [gelu](BuiltinCall &c) {
        return gelu(c, c.word("approximate", "none"));
      });
  add("gelu_tanh", {{"x", K::Tensor, true, {}}},
      [gelu](BuiltinCall &c) { return gelu(c, "tanh"); });
  std::vector<ArgSpec> x1 = {{"x", K::Tensor, true, {}}};
  add("silu", x1, unary<SiluOp>());
  add("relu", x1, unary<ReluOp>());
  add("sigmoid", x1, unary<SigmoidOp>());
  add("tanh", x1, unary<TanhOp>());
  add("exp", x1, unary<ExpOp>());
  add("log", x1, unary<LogOp>());
  add("sqrt", x1, unary<SqrtOp>());
  add("rsqrt", x1, unary<RsqrtOp>());

  add("dropout",
      {{"x", K::Tensor, true, {}},
       {"rate", K::Float, true, {}},
       {"seed", K::Int, false, {}}},
      [](BuiltinCall &c) -> std::optional<Val> {
        const gen::Tensor &x = c.tensor("x");
        double rate = c.f64("rate", 0);
        if (!(rate >= 0 && rate < 1)) {
          c.gen.error(c.loc("rate"), "dropout(): 'rate' must be in [0, 1), "
                                     "got " +
                                         std::to_string(rate));
          return std::nullopt;
        }
        if (!isFloat(x.elt)) {
          c.gen.error(c.loc("x"), "dropout() needs a floating-point tensor");
          return std::nullopt;
        }
        int64_t seed =
            c.has("seed") ? c.i64("seed", 0) : c.gen.nextDropoutSeed();
        auto &b = c.gen.builder();
        auto op = b.create<DropoutOp>(c.gen.loc(c.call.loc), x.value.getType(),
                                      x.value, b.getF64FloatAttr(rate),
                                      b.getI64IntegerAttr(seed));
        return Val::ofTensor(c.gen.make(op, x.elt, x.shape));
      });

  add("rope",
      {{"x", K::Tensor, true, {}},
       {"head_dim", K::Int, true, {}},
       {"theta", K::Float, false, {}},
       {"style", K::Enum, false, {"interleaved", "half"}},
       {"positions", K::Tensor, false, {}}},
      [](BuiltinCall &c) -> std::optional<Val> {
        const gen::Tensor &x = c.tensor("x");
        int64_t hd = c.i64("head_dim", 0);
        double theta = c.f64("theta", 10000.0);
        if (x.rank() != 3 || !isFloat(x.elt)) {
          c.gen.error(c.loc("x"), "rope() rotates a float [B, T, heads * "
                                  "head_dim] tensor, got " +
                                      typeStr(x.elt, x.shape));
          return std::nullopt;
        }
        if (hd <= 0 || hd % 2 || !divDims(x.shape[2], SymDim::of(hd))) {
          c.gen.error(c.loc("head_dim"),
                      "rope(): 'head_dim' must be a positive even number "
                      "that divides " +
                          x.shape[2].str() + ", got " + llvm::Twine(hd));
          return std::nullopt;
        }
        if (!(theta > 0)) {
          c.gen.error(c.loc("theta"), "rope(): 'theta' must be positive");
          return std::nullopt;
        }
        mlir::Value positions;
        if (c.has("positions")) {
          const gen::Tensor &p = c.tensor("positions");
          bool ok =
              isInt(p.elt) && ((p.rank() == 1 && p.shape[0] == x.shape[1]) ||
                               (p.rank() == 2 && p.shape[0] == x.shape[0] &&
                                p.shape[1] == x.shape[1]));
          if (!ok) {
            c.gen.error(c.loc("positions"),
                        "rope(): 'positions' must be an integer [T] or [B, "
                        "T] tensor for x " +
                            typeStr(x.elt, x.shape) + ", got " +
                            typeStr(p.elt, p.shape));
            return std::nullopt;
          }
          positions = p.value;
        }
        auto &b = c.gen.builder();
        mlir::OperationState state(c.gen.loc(c.call.loc),
                                   RopeOp::getOperationName());
        RopeOp::build(b, state, x.value.getType(), x.value, positions,
                      b.getI64IntegerAttr(hd), b.getF64FloatAttr(theta),
                      RopeStyleAttr::get(
                          b.getContext(),
                          *symbolizeRopeStyle(c.word("style", "interleaved"))));
        mlir::Operation *op = b.create(state);
        return Val::ofTensor(c.gen.make(op, x.elt, x.shape));
      });

  add("attention",
      {{"q", K::Tensor, true, {}},
       {"k", K::Tensor, true, {}},
       {"v", K::Tensor, true, {}},
       {"heads", K::Int, true, {}},
       {"kv_heads", K::Int, false, {}},
       {"causal", K::Bool, false, {}},
       {"pattern", K::Pattern, false, {}},
       {"mask", K::Tensor, false, {}},
       {"bias", K::Tensor, false, {}},
       {"scale", K::Float, false, {}}},
      [](BuiltinCall &c) -> std::optional<Val> {
        const gen::Tensor &q = c.tensor("q"), &k = c.tensor("k"),
                          &v = c.tensor("v");
        int64_t h = c.i64("heads", 0), hkv = c.i64("kv_heads", h);
        auto fail = [&](const std::string &arg, const llvm::Twine &msg) {
          c.gen.error(c.loc(arg), "attention(): " + msg);
          return std::nullopt;
        };
        for (const char *n : {"q", "k", "v"}) {
          const gen::Tensor &t = c.tensor(n);
          if (t.rank() != 3 || !isFloat(t.elt) || t.elt != q.elt)
            return fail(n, llvm::Twine("'") + n +
                               "' must be a float [B, T, heads * head_dim] "
                               "tensor like q, got " +
                               typeStr(t.elt, t.shape));
        }
        if (h <= 0)
          return fail("heads", "'heads' must be positive");
        if (hkv <= 0 || h % hkv)
          return fail("kv_heads", "'kv_heads' must be positive and divide "
                                  "heads = " +
                                      llvm::Twine(h) + ", got " +
                                      llvm::Twine(hkv));
        auto d = divDims(q.shape[2], SymDim::of(h));
        if (!d)
          return fail(
              "q", "the width " + q.shape[2].str() +
                       " of q is not divisible by heads = " + llvm::Twine(h));
        auto kw = mulDims(*d, SymDim::of(hkv));
        if (k.shape[2] != *kw)
          return fail("k", "k must be kv_heads * head_dim = " +
                               llvm::Twine(hkv) + " * " + d->str() +
                               " wide, got " + typeStr(k.elt, k.shape));
        auto dv = divDims(v.shape[2], SymDim::of(hkv));
        if (!dv)
          return fail("v", "the width " + v.shape[2].str() +
                               " of v is not divisible by kv_heads = " +
                               llvm::Twine(hkv));
        if (k.shape[0] != q.shape[0] || v.shape[0] != q.shape[0])
          return fail("k", "q, k and v must have the same batch size, got " +
                               q.shape[0].str() + ", " + k.shape[0].str() +
                               ", " + v.shape[0].str());
        if (k.shape[1] != v.shape[1])
          return fail("v", "k and v must have the same length, got " +
                               k.shape[1].str() + " and " + v.shape[1].str());
        SymDim bsz = q.shape[0], tq = q.shape[1], tk = k.shape[1];
        mlir::Value mask, bias;
        if (c.has("mask")) {
          const gen::Tensor &m = c.tensor("mask");
          if (m.rank() != 2 || m.shape[0] != bsz || m.shape[1] != tk)
            return fail("mask", "'mask' is a [B, Tk] = [" + bsz.str() + ", " +
                                    tk.str() + "] key padding mask, got " +
                                    typeStr(m.elt, m.shape));
          mask = m.value;
        }
        if (c.has("bias")) {
          const gen::Tensor &bt = c.tensor("bias");
          Shape full = {bsz, SymDim::of(h), tq, tk};
          bool ok = (bt.rank() == 3 || bt.rank() == 4) && bt.elt == q.elt;
          for (int64_t i = 0; ok && i < bt.rank(); ++i) {
            const SymDim &want = full[4 - bt.rank() + i];
            ok = bt.shape[i] == want || bt.shape[i] == SymDim::of(1);
          }
          if (!ok)
            return fail("bias", "'bias' must broadcast to [B, heads, Tq, Tk] "
                                "= " +
                                    typeStr(q.elt, full) + ", got " +
                                    typeStr(bt.elt, bt.shape));
          bias = bt.value;
        }
        double scale = c.has("scale") ? c.f64("scale", 1)
                       : d->isStatic()
                           ? 1.0 / std::sqrt(static_cast<double>(d->factor))
                           : 0.0;
        if (!(scale > 0))
          return fail("scale", "'scale' must be positive");
        auto optDv = mulDims(*dv, SymDim::of(h));
        Shape out = {bsz, tq, *optDv};
        auto &b = c.gen.builder();
        AttentionPatternAttr patternAttr;
        if (c.has("pattern") && c.args.at("pattern").pattern.sparse())
          patternAttr = AttentionPatternAttr::get(b.getContext(),
                                                  c.args.at("pattern").pattern);
        auto op = b.create<AttentionOp>(
            c.gen.loc(c.call.loc), c.gen.mlirType(q.elt, out), mlir::Type(),
            q.value, k.value, v.value, mask, bias, b.getI64IntegerAttr(h),
            b.getI64IntegerAttr(hkv), b.getF64FloatAttr(scale),
            b.getBoolAttr(c.boolean("causal", false)), patternAttr,
            mlir::UnitAttr());
        return Val::ofTensor(c.gen.make(op, q.elt, out));
      });

  add("cross_entropy",
      {{"logits", K::Tensor, true, {}},
       {"targets", K::Tensor, true, {}},
       {"ignore_index", K::Int, false, {}}},
      [](BuiltinCall &c) -> std::optional<Val> {
        const gen::Tensor &l = c.tensor("logits"), &t = c.tensor("targets");
        if (!isFloat(l.elt) || l.rank() < 1) {
          c.gen.error(c.loc("logits"), "cross_entropy(): 'logits' must be a "
                                       "float [..., classes] tensor");
          return std::nullopt;
        }
        Shape outer(l.shape.begin(), l.shape.end() - 1);
        if (!isInt(t.elt) || t.shape != outer) {
          c.gen.error(c.loc("targets"),
                      "cross_entropy(): 'targets' must be an integer tensor "
                      "of shape [" +
                          typeStr(t.elt, outer).substr(4) +
                          " (the logits without the class dimension), got " +
                          typeStr(t.elt, t.shape));
          return std::nullopt;
        }
        auto &b = c.gen.builder();
        auto op = b.create<CrossEntropyOp>(
            c.gen.loc(c.call.loc),
            mlir::RankedTensorType::get({}, b.getF32Type()), l.value, t.value,
            b.getI64IntegerAttr(c.i64("ignore_index", -100)));
        return Val::ofTensor(c.gen.make(op, b.getF32Type(), {}));
      });

  add("cast", {{"x", K::Tensor, true, {}}, {"dtype", K::Dtype, true, {}}},
      [](BuiltinCall &c) -> std::optional<Val> {
        const gen::Tensor &x = c.tensor("x");
        mlir::Type elt = *c.gen.dtype(c.word("dtype", "f32"));
        auto op = c.gen.builder().create<CastOp>(
            c.gen.loc(c.call.loc), c.gen.mlirType(elt, x.shape), x.value);
        return Val::ofTensor(c.gen.make(op, elt, x.shape));
      });

  add("relative_position_bucket",
      {{"q", K::Tensor, true, {}},
       {"k", K::Tensor, true, {}},
       {"num_buckets", K::Int, false, {}},
       {"max_distance", K::Int, false, {}},
       {"bidirectional", K::Bool, false, {}}},
      [](BuiltinCall &c) -> std::optional<Val> {
        const gen::Tensor &q = c.tensor("q"), &k = c.tensor("k");
        int64_t nb = c.i64("num_buckets", 32), md = c.i64("max_distance", 128);
        bool bidir = c.boolean("bidirectional", true);
        if (q.rank() < 2 || k.rank() < 2) {
          c.gen.error(c.call.loc, "relative_position_bucket(): q and k need "
                                  "rank >= 2 (dimension -2 is the sequence)");
          return std::nullopt;
        }
        int64_t exact = (bidir ? nb / 2 : nb) / 2;
        if (nb <= 0 || (bidir && nb % 2) || exact < 1 || md <= exact) {
          c.gen.error(c.call.loc,
                      "relative_position_bucket(): need a positive "
                      "num_buckets (even when bidirectional) with at least "
                      "one exact bucket, and max_distance above the exact "
                      "range");
          return std::nullopt;
        }
        Shape out = {q.shape[q.rank() - 2], k.shape[k.rank() - 2]};
        auto &b = c.gen.builder();
        mlir::Type i32 = b.getI32Type();
        auto op = b.create<RelativePositionBucketOp>(
            c.gen.loc(c.call.loc), c.gen.mlirType(i32, out), q.value, k.value,
            b.getBoolAttr(bidir), b.getI64IntegerAttr(nb),
            b.getI64IntegerAttr(md));
        return Val::ofTensor(c.gen.make(op, i32, out));
      });
  return defs;
}

} // namespace

const std::vector<BuiltinDef> &gen::builtins() {
  static const std::vector<BuiltinDef> defs = makeBuiltins();
  return defs;
}

const BuiltinDef *gen::findBuiltin(llvm::StringRef name) {
  for (const BuiltinDef &d : builtins())
    if (name == d.name)
      return &d;
  return nullptr;
}

bool Gen::pattern(const ast::Expr &ex, const std::string &what,
                  runtime::attention::PatternSpec &out) {
  namespace attn = runtime::attention;
  const ast::Expr *callee =
      ex.kind == ast::ExprKind::Call ? ex.base.get() : &ex;
  if (!callee || callee->kind != ast::ExprKind::Name)
    return error(ex.loc, what +
                             " must be a pattern such as "
                             "sliding_window(256); the patterns are " +
                             attn::patternKindList());
  const attn::PatternKindInfo *info = attn::findPatternKind(callee->name);
  if (!info)
    return error(callee->loc, "unknown attention pattern '" + callee->name +
                                  "'; the patterns are " +
                                  attn::patternKindList());
  std::string kind = info->name;
  std::vector<const attn::PatternParam *> params;
  std::string names;
  for (const attn::PatternParam &p : info->params)
    params.push_back(&p);
  params.push_back(&attn::globalTokensParam());
  for (const attn::PatternParam *p : params)
    names += (names.empty() ? "" : ", ") + std::string(p->name);
  attn::PatternSpec spec;
  spec.kind = info->kind;
  std::vector<std::string> given;
  std::vector<std::pair<std::string, SMLoc>> locs;
  auto set = [&](const attn::PatternParam &p, const ast::Expr &v,
                 SMLoc l) -> bool {
    if (llvm::is_contained(given, p.name))
      return error(l, "'" + std::string(p.name) + "' of " + kind +
                          "() is given twice");
    std::optional<Val> val = eval(v);
    if (!val)
      return false;
    if (val->kind != Val::Int || !val->dim.isStatic())
      return error(v.loc, "'" + std::string(p.name) + "' of " + kind +
                              "() must be an integer, got " + describe(*val));
    spec.*(p.field) = val->dim.factor;
    given.push_back(p.name);
    locs.push_back({p.name, l});
    return true;
  };
  if (ex.kind == ast::ExprKind::Call) {
    if (ex.items.size() > info->params.size())
      return error(ex.items[info->params.size()]->loc,
                   kind + "() takes " + llvm::Twine(info->params.size()) +
                       " positional argument" +
                       (info->params.size() == 1 ? "" : "s") +
                       "; its parameters are " + names);
    for (size_t i = 0; i < ex.items.size(); ++i)
      if (!set(info->params[i], *ex.items[i], ex.items[i]->loc))
        return false;
    for (const ast::KeywordArg &k : ex.keywords) {
      auto p = llvm::find_if(params, [&](const attn::PatternParam *p) {
        return k.name == p->name;
      });
      if (p == params.end())
        return error(k.loc, kind + "() has no parameter '" + k.name +
                                "'; its parameters are " + names);
      if (!set(**p, *k.value, k.loc))
        return false;
    }
  }
  std::string bad = attn::checkPattern(spec, &given);
  if (!bad.empty()) {
    // At the parameter the message names, else at the pattern's name.
    SMLoc at = callee->loc;
    for (auto it = locs.rbegin(); it != locs.rend(); ++it)
      if (bad.find("'" + it->first + "'") != std::string::npos)
        at = it->second;
    return error(at, "attention pattern " + bad);
  }
  out = spec;
  return true;
}

std::optional<Val> Gen::callBuiltin(const BuiltinDef &def, const ast::Expr &e) {
  BuiltinCall call{*this, e, def.name, {}};
  std::string name = def.name;
  if (e.items.size() > def.args.size()) {
    error(e.loc, name + "() takes at most " + llvm::Twine(def.args.size()) +
                     " arguments, got " + llvm::Twine(e.items.size()) +
                     "; usage: " + usage(def));
    return std::nullopt;
  }
  auto bind = [&](const ArgSpec &spec, const ast::Expr &ex, SMLoc l) -> bool {
    std::string what =
        "argument '" + std::string(spec.name) + "' of " + name + "()";
    BuiltinCall::Bound bound;
    bound.loc = l;
    if (spec.kind == ArgKind::Pattern) {
      if (!pattern(ex, what, bound.pattern))
        return false;
      call.args[spec.name] = bound;
      return true;
    }
    if (spec.kind == ArgKind::Enum || spec.kind == ArgKind::Dtype) {
      bool ok = ex.kind == ast::ExprKind::Name;
      if (ok && spec.kind == ArgKind::Enum)
        ok = llvm::is_contained(spec.options, llvm::StringRef(ex.name));
      if (ok && spec.kind == ArgKind::Dtype)
        ok = dtype(ex.name).has_value();
      if (!ok) {
        std::string opts;
        if (spec.kind == ArgKind::Dtype)
          opts = "f32, f16, bf16, f64, i32, i64, bool";
        for (const char *o : spec.options)
          opts += (opts.empty() ? "" : ", ") + std::string(o);
        return error(ex.loc, what + " must be one of " + opts);
      }
      bound.word = ex.name;
      call.args[spec.name] = bound;
      return true;
    }
    std::optional<Val> v = eval(ex);
    if (!v)
      return false;
    auto expect = [&](bool ok, const char *kind) {
      if (!ok)
        error(ex.loc, what + " must be " + kind + ", got " + describe(*v));
      return ok;
    };
    bool isStaticInt = v->kind == Val::Int && v->dim.isStatic();
    switch (spec.kind) {
    case ArgKind::Tensor:
      if (!expect(v->kind == Val::Tensor, "a tensor"))
        return false;
      break;
    case ArgKind::Int:
      if (!expect(isStaticInt, "an integer"))
        return false;
      break;
    case ArgKind::Float:
      if (!expect(isStaticInt || v->kind == Val::Float, "a number"))
        return false;
      break;
    case ArgKind::Bool:
      if (!expect(v->kind == Val::Bool, "true or false"))
        return false;
      break;
    case ArgKind::Number:
      if (!expect(v->kind == Val::Tensor || v->isNumber(),
                  "a tensor or a number"))
        return false;
      break;
    case ArgKind::IntList: {
      if (isStaticInt) {
        Val list{Val::List};
        list.items.push_back(*v);
        v = list;
      }
      bool ok = v->kind == Val::List;
      for (const Val &i : ok ? v->items : std::vector<Val>())
        ok = ok && i.kind == Val::Int && i.dim.isStatic();
      if (!expect(ok, "an integer or a list of integers"))
        return false;
      break;
    }
    case ArgKind::Shape: {
      bool ok = v->kind == Val::List;
      for (const Val &i : ok ? v->items : std::vector<Val>())
        ok = ok && i.kind == Val::Int && i.dim.factor > 0;
      if (!expect(ok, "a list of positive sizes such as [B, T, 12, 64]"))
        return false;
      break;
    }
    case ArgKind::TensorList: {
      bool ok = v->kind == Val::List;
      for (const Val &i : ok ? v->items : std::vector<Val>())
        ok = ok && i.kind == Val::Tensor;
      if (!expect(ok, "a list of tensors such as [a, b]"))
        return false;
      break;
    }
    case ArgKind::Enum:
    case ArgKind::Dtype:
    case ArgKind::Pattern:
      break;
    }
    bound.val = *v;
    call.args[spec.name] = bound;
    return true;
  };
  for (size_t i = 0; i < e.items.size(); ++i)
    if (!bind(def.args[i], *e.items[i], e.items[i]->loc))
      return std::nullopt;
  for (const ast::KeywordArg &k : e.keywords) {
    auto spec = llvm::find_if(
        def.args, [&](const ArgSpec &s) { return k.name == s.name; });
    if (spec == def.args.end()) {
      error(k.loc,
            name + "() has no argument '" + k.name + "'; usage: " + usage(def));
      return std::nullopt;
    }
    if (call.has(spec->name)) {
      error(k.loc,
            "argument '" + k.name + "' of " + name + "() is given twice");
      return std::nullopt;
    }
    if (!bind(*spec, *k.value, k.loc))
      return std::nullopt;
  }
  for (const ArgSpec &spec : def.args)
    if (spec.required && !call.has(spec.name)) {
      error(e.loc, name + "() is missing argument '" + spec.name +
                       "'; usage: " + usage(def));
      return std::nullopt;
    }
  return def.emit(call);
}
