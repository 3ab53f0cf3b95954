//===- Locations.h - source locations for people -----------------*- C++
//-*-===//
//
// Ops carry where the user wrote them: a FileLineColLoc, wrapped in
// CallSiteLocs (functions inlined into their callers) and NameLocs (the
// block layer, "h.3"). Errors at compile time and at run time (the artifact
// keeps each kernel's location) print them the same way.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_IR_LOCATIONS_H
#define KILN_IR_LOCATIONS_H

#include "mlir/IR/Location.h"

#include <string>

namespace kiln {

/// The innermost file location of `loc`: the op's own line, not the call
/// sites it was inlined through (null if it has none).
mlir::FileLineColLoc fileLocation(mlir::Location loc);

/// "file:line:col" of the op's own line, then, when it was inlined,
/// " (in h.3, called from file:line:col)" naming the outermost call site:
/// what run-time errors print for a kernel. A fused location lists each of
/// its places, separated by ", ".
std::string describeLocation(mlir::Location loc);

/// The block instance an op was inlined from ("h.3"): the name the frontend
/// gives the call site of a block's function, or empty.
llvm::StringRef blockInstance(mlir::Location loc);

} // namespace kiln

#endif
