//===- BlockSoftmax.h - the softmax steps of blocked attention -*- C++ -*-===//
//
// The elementwise work between the block products of attention/Flash.cpp,
// on blocks of up to 64 rows of 64 scores (row stride 64):
//
//   onlineSoftmax   forward: update each row's running maximum m and sum l
//                   with a new block of scores, rescale the output
//                   accumulator acc (rows of Dv) by exp(m_old - m_new), and
//                   turn the scores into exp(s - m_new)
//   probabilities   backward: P = exp(s - lse) and dS = P (dP - D) scale
//
// An AVX-512 path (a vector exp, whole rows in four registers) and a
// portable one written for the vectorizer (AVX2+FMA and baseline clones).
// A row whose scores are all -inf (nothing visible) yields zeros.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_ATTENTION_BLOCKSOFTMAX_H
#define KILN_RUNTIME_ATTENTION_BLOCKSOFTMAX_H

#include "runtime/attention/BlockGemm.h"

#include <cstdint>

namespace kiln::runtime::attention {

void onlineSoftmax(Isa isa, int64_t rows, int64_t Dv, float *s, float *m,
                   float *l, float *acc);

void probabilities(Isa isa, int64_t rows, float scale, const float *s,
                   const float *dp, const float *lse, const float *D, float *p,
                   float *ds);

} // namespace kiln::runtime::attention

#endif
