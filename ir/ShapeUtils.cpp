//===- ShapeUtils.cpp - shape helpers -------------------------------------===//
#include "ir/ShapeUtils.h"

#include "mlir/IR/BuiltinTypeInterfaces.h"
#include "llvm/ADT/StringExtras.h"

using namespace kiln;

static bool isDynamic(int64_t d) { return mlir::ShapedType::isDynamic(d); }

std::optional<int64_t> kiln::normalizeAxis(int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= rank)
    return std::nullopt;
  return axis < 0 ? axis + rank : axis;
}

bool kiln::compatibleDims(int64_t a, int64_t b) {
  return a == b || isDynamic(a) || isDynamic(b);
}

bool kiln::broadcastShapes(llvm::ArrayRef<int64_t> a, llvm::ArrayRef<int64_t> b,
                           llvm::SmallVectorImpl<int64_t> &out,
                           int64_t &badDim) {
  size_t rank = std::max(a.size(), b.size());
  out.assign(rank, 1);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < a.size() ? a[a.size() - 1 - i] : 1;
    int64_t db = i < b.size() ? b[b.size() - 1 - i] : 1;
    int64_t r;
    if (da == db)
      r = da;
    else if (da == 1)
      r = db;
    else if (db == 1)
      r = da;
    else if (isDynamic(da))
      r = db; // a run-time size that must be db (or 1).
    else if (isDynamic(db))
      r = da;
    else {
      badDim = static_cast<int64_t>(i);
      return false;
    }
    out[rank - 1 - i] = r;
  }
  return true;
}

std::string kiln::shapeToString(llvm::ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i)
      s += ", ";
    s += isDynamic(shape[i]) ? std::string("?") : std::to_string(shape[i]);
  }
  return s + "]";
}

std::string kiln::checkDimExpr(llvm::StringRef expr) {
  if (expr.empty())
    return "empty dimension expression";
  llvm::SmallVector<llvm::StringRef> factors;
  expr.split(factors, '*');
  for (llvm::StringRef f : factors) {
    f = f.trim();
    if (f.empty())
      return "missing factor in '" + expr.str() + "'";
    if (llvm::isDigit(f.front())) {
      uint64_t v;
      if (f.getAsInteger(10, v) || v == 0)
        return "factor '" + f.str() + "' in '" + expr.str() +
               "' is not a positive integer";
      continue;
    }
    if (!(llvm::isAlpha(f.front()) || f.front() == '_'))
      return "factor '" + f.str() + "' in '" + expr.str() +
             "' is not a name or a positive integer";
    for (char c : f)
      if (!(llvm::isAlnum(c) || c == '_'))
        return "factor '" + f.str() + "' in '" + expr.str() +
               "' is not a name or a positive integer";
  }
  return "";
}
