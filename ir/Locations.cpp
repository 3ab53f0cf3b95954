//===- Locations.cpp - source locations for people ------------------------===//
#include "ir/Locations.h"

#include "mlir/IR/BuiltinAttributes.h"

using namespace mlir;

FileLineColLoc kiln::fileLocation(Location loc) {
  if (auto f = llvm::dyn_cast<FileLineColLoc>(loc))
    return f;
  if (auto c = llvm::dyn_cast<CallSiteLoc>(loc))
    return fileLocation(c.getCallee());
  if (auto n = llvm::dyn_cast<NameLoc>(loc))
    return fileLocation(n.getChildLoc());
  if (auto f = llvm::dyn_cast<FusedLoc>(loc))
    for (Location l : f.getLocations())
      if (auto found = fileLocation(l))
        return found;
  return {};
}

namespace {
std::string text(FileLineColLoc f) {
  return f.getFilename().str() + ":" + std::to_string(f.getLine()) + ":" +
         std::to_string(f.getColumn());
}
} // namespace

std::string kiln::describeLocation(Location loc) {
  // A fused kernel came from several ops: each of their places.
  if (auto f = llvm::dyn_cast<FusedLoc>(loc)) {
    std::string out;
    for (Location l : f.getLocations()) {
      std::string one = describeLocation(l);
      if (!one.empty() && out.find(one) == std::string::npos)
        out += (out.empty() ? "" : ", ") + one;
    }
    return out;
  }
  FileLineColLoc own = fileLocation(loc);
  if (!own)
    return "";
  // Walk outwards through the callers: the innermost block layer named on
  // the way, and the outermost call site.
  std::string layer;
  Location at = loc;
  bool inlined = false;
  for (;;) {
    if (auto n = llvm::dyn_cast<NameLoc>(at)) {
      if (layer.empty())
        layer = n.getName().str();
      at = n.getChildLoc();
    } else if (auto c = llvm::dyn_cast<CallSiteLoc>(at)) {
      inlined = true;
      at = c.getCaller();
    } else {
      break;
    }
  }
  FileLineColLoc caller = inlined ? fileLocation(at) : FileLineColLoc();
  std::string out = text(own);
  if (caller && caller != own)
    out += " (" + (layer.empty() ? std::string() : "in " + layer + ", ") +
           "called from " + text(caller) + ")";
  return out;
}

llvm::StringRef kiln::blockInstance(mlir::Location loc) {
  if (auto fused = llvm::dyn_cast<FusedLoc>(loc))
    return fused.getLocations().empty()
               ? StringRef()
               : blockInstance(fused.getLocations().front());
  if (auto call = llvm::dyn_cast<CallSiteLoc>(loc)) {
    if (auto name = llvm::dyn_cast<NameLoc>(call.getCaller()))
      return name.getName().strref();
    StringRef inner = blockInstance(call.getCallee());
    return inner.empty() ? blockInstance(call.getCaller()) : inner;
  }
  return StringRef();
}
