//===- ShapeUtils.h - shape helpers shared by the IR and frontend -*- C++
//-*-===//
//
// Small, dependency-light helpers for the shape rules of the kiln dialect.
// Sizes follow MLIR's convention: ShapedType::kDynamic marks a size known only
// at run time.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_IR_SHAPEUTILS_H
#define KILN_IR_SHAPEUTILS_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"
#include <cstdint>
#include <optional>
#include <string>

namespace kiln {

/// Normalizes a possibly negative axis; nullopt when out of range.
std::optional<int64_t> normalizeAxis(int64_t axis, int64_t rank);

/// NumPy broadcasting of two shapes (dynamic sizes allowed). On failure
/// returns false and sets `badDim` to the offending dimension counted from the
/// end (0 = last).
bool broadcastShapes(llvm::ArrayRef<int64_t> a, llvm::ArrayRef<int64_t> b,
                     llvm::SmallVectorImpl<int64_t> &out, int64_t &badDim);

/// True when two sizes may be equal at run time.
bool compatibleDims(int64_t a, int64_t b);

/// Renders a shape as `[B?, 768]`-style text: `[?, ?, 768]`.
std::string shapeToString(llvm::ArrayRef<int64_t> shape);

/// Checks a dimension expression: a product of identifiers and positive
/// integers, e.g. "B", "B*T", "4*T". Returns an empty string when valid, or
/// what is wrong.
std::string checkDimExpr(llvm::StringRef expr);

} // namespace kiln

#endif
