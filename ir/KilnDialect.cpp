//===- KilnDialect.cpp - the kiln dialect ---------------------------------===//
#include "ir/KilnDialect.h"
#include "ir/KilnOps.h"

using namespace mlir;
using namespace kiln;

#include "ir/KilnDialect.cpp.inc"

void KilnDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "ir/KilnOps.cpp.inc"
      >();
}
