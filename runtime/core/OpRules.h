//===- OpRules.h - the per-op rules the op table names -----------*- C++
//-*-===//
//
// Internal to the runtime: each op's load-time check (core/OpChecks.cpp)
// and run-time shape rule (core/ShapeRules.cpp), referenced by its row in
// core/OpTable.cpp. A null check means the counts and the attribute table
// are all there is to check.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_CORE_OPRULES_H
#define KILN_RUNTIME_CORE_OPRULES_H

#include "runtime/core/OpTable.h"

namespace kiln::runtime::rules {

#define KILN_CHECK(name) std::string name(const KernelOperands &)
KILN_CHECK(checkBinary);
KILN_CHECK(checkUnary);
KILN_CHECK(checkEmbedding);
KILN_CHECK(checkMatmul);
KILN_CHECK(checkSameType);
KILN_CHECK(checkReshape);
KILN_CHECK(checkTranspose);
KILN_CHECK(checkSlice);
KILN_CHECK(checkConcat);
KILN_CHECK(checkSplit);
KILN_CHECK(checkReduce);
KILN_CHECK(checkSoftmax);
KILN_CHECK(checkNorm);
KILN_CHECK(checkRope);
KILN_CHECK(checkAttention);
KILN_CHECK(checkCachedAttention);
KILN_CHECK(checkRelativePositionBucket);
KILN_CHECK(checkCrossEntropy);
KILN_CHECK(checkCrossEntropyGrad);
KILN_CHECK(checkEmbeddingGrad);
KILN_CHECK(checkActivationGrad);
KILN_CHECK(checkSliceGrad);
KILN_CHECK(checkLike);
KILN_CHECK(checkReduceGrad);
KILN_CHECK(checkConcatGrad);
KILN_CHECK(checkAttentionGrad);
KILN_CHECK(checkGlobalNorm);
KILN_CHECK(checkOptimizerUpdate);
KILN_CHECK(checkFused);
#undef KILN_CHECK

#define KILN_SHAPE(name)                                                       \
  Status name(                                                                 \
      const kart::Kernel &, const std::vector<const std::vector<int64_t> *> &, \
      const std::vector<int64_t> &, std::vector<std::vector<int64_t>> &)
KILN_SHAPE(shapeBinary);
KILN_SHAPE(shapeLikeFirst);
KILN_SHAPE(shapeEmbedding);
KILN_SHAPE(shapeMatmul);
KILN_SHAPE(shapeNorm);
KILN_SHAPE(shapeRope);
KILN_SHAPE(shapeReshape);
KILN_SHAPE(shapeTranspose);
KILN_SHAPE(shapeSlice);
KILN_SHAPE(shapeConcat);
KILN_SHAPE(shapeSplit);
KILN_SHAPE(shapeReduce);
KILN_SHAPE(shapeAttention);
KILN_SHAPE(shapeCachedAttention);
KILN_SHAPE(shapeRelativePositionBucket);
KILN_SHAPE(shapeCrossEntropy);
KILN_SHAPE(shapeEmbeddingGrad);
KILN_SHAPE(shapeActivationGrad);
KILN_SHAPE(shapeSliceGrad);
KILN_SHAPE(shapeReshapeLike);
KILN_SHAPE(shapeReduceGrad);
KILN_SHAPE(shapeConcatGrad);
KILN_SHAPE(shapeAttentionGrad);
KILN_SHAPE(shapeGlobalNorm);
KILN_SHAPE(shapeOptimizerUpdate);
KILN_SHAPE(shapeFused);
#undef KILN_SHAPE

} // namespace kiln::runtime::rules

#endif
